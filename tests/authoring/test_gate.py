"""The gate before serving: loading checks the schema only; validation and rule tests run when asked,
and a pass is remembered for exactly the same ruleset and code (never for another digest)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cds._exceptions import RulesetError
from cds.authoring.gate import gate_ruleset, load_validated, validate_ruleset
from cds.cache import code_version
from cds.engine import Engine
from cds.rules.loader import load_ruleset

from .conftest import NOW


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CDS_CACHE_DIR", str(folder))
    monkeypatch.delenv("CDS_CACHE", raising=False)
    return folder


def _break_template(directory: Path) -> None:
    rule = directory / "rules" / "toy-egfr.yaml"
    rule.write_text(rule.read_text().replace('detail: "eGFR {{ lab.egfr }}"', 'detail: "eGFR {{ mystery }}"'))


def _break_a_test(directory: Path) -> None:
    tests = directory / "rules" / "toy-egfr.test.yaml"
    tests.write_text(tests.read_text().replace("LOINC#98979-8 42", "LOINC#98979-8 20"))  # now it fires


def test_loading_checks_the_schema_only_validation_is_asked_for(toy_ruleset: Path) -> None:
    _break_template(toy_ruleset)
    ruleset = load_ruleset(toy_ruleset)  # strict, yet no template check: evaluate need not pay for it
    assert ruleset.errors == [] and not ruleset.validated
    Engine(ruleset)  # compiles
    issues = validate_ruleset(ruleset)
    assert any("unknown template variable 'mystery'" in str(i) and "toy-egfr.yaml:" in str(i) for i in issues)
    assert ruleset.validated and ruleset.errors
    assert validate_ruleset(ruleset) == issues  # once only: no duplicated issues
    with pytest.raises(RulesetError, match="do not validate"):
        load_validated(toy_ruleset)


def test_gate_refuses_validation_errors_and_failing_rule_tests(toy_ruleset: Path, cache: Path) -> None:
    _break_a_test(toy_ruleset)
    result = gate_ruleset(load_ruleset(toy_ruleset))
    assert not result.ok and result.rule_tests
    assert any("toy-egfr :: eGFR 42 is silent" in failure for failure in result.test_failures)
    with pytest.raises(RulesetError) as refused:
        result.raise_for_refusal()
    assert any("eGFR 42 is silent" in detail for detail in refused.value.issues)
    _break_template(toy_ruleset)
    result = gate_ruleset(load_ruleset(toy_ruleset))
    assert not result.ok and not result.rule_tests  # invalid rules are not even tested
    assert any("mystery" in issue for issue in result.issues)
    assert not (cache / "gate").exists() or not list((cache / "gate").iterdir())  # refusals are never cached


def test_a_pass_is_cached_for_the_same_digest_and_code_only(toy_ruleset: Path, cache: Path) -> None:
    ruleset = load_ruleset(toy_ruleset)
    first = gate_ruleset(ruleset)
    assert first.ok and first.rule_tests and not first.cached
    assert first.engine is not None  # the tested engine, so the caller need not compile again
    entry_path = cache / "gate" / f"{ruleset.full_digest}.json"
    entry = json.loads(entry_path.read_text())
    assert entry["digest"] == ruleset.full_digest and entry["code"] == code_version() and entry["rule_tests"]
    assert entry_path.stat().st_mode & 0o077 == 0  # private to the user

    again = gate_ruleset(load_ruleset(toy_ruleset))
    assert again.ok and again.cached and again.rule_tests and again.engine is None
    assert again.duration_ms < first.duration_ms  # nothing was re-checked (no template, no test case)

    # a changed test file is a different ruleset: the cache is not consulted for it, the tests run
    _break_a_test(toy_ruleset)
    changed = load_ruleset(toy_ruleset)
    assert changed.full_digest != ruleset.full_digest
    verdict = gate_ruleset(changed)
    assert not verdict.ok and not verdict.cached

    # even a pass stored under the new digest's name is refused when it names another digest
    (cache / "gate" / f"{changed.full_digest}.json").write_text(json.dumps(entry))
    os.chmod(cache / "gate" / f"{changed.full_digest}.json", 0o600)
    assert not gate_ruleset(changed).ok

    # and an entry written by other code (another version of cds or its libraries) is not trusted
    (cache / "gate" / f"{changed.full_digest}.json").write_text(
        json.dumps({**entry, "digest": changed.full_digest, "code": "0" * 64}))
    assert not gate_ruleset(changed).ok


def test_a_cached_pass_without_rule_tests_does_not_stand_for_one_with(toy_ruleset: Path, cache: Path) -> None:
    assert gate_ruleset(load_ruleset(toy_ruleset), run_rule_tests=False).rule_tests is False
    with_tests = gate_ruleset(load_ruleset(toy_ruleset))
    assert with_tests.ok and with_tests.rule_tests and not with_tests.cached
    assert gate_ruleset(load_ruleset(toy_ruleset), run_rule_tests=False).cached


def test_an_entry_others_could_write_is_ignored(toy_ruleset: Path, cache: Path) -> None:
    ruleset = load_ruleset(toy_ruleset)
    assert gate_ruleset(ruleset).ok
    entry = cache / "gate" / f"{ruleset.full_digest}.json"
    os.chmod(entry, 0o666)
    assert not gate_ruleset(load_ruleset(toy_ruleset)).cached
    entry.write_text("{not json")
    os.chmod(entry, 0o600)
    assert gate_ruleset(load_ruleset(toy_ruleset)).ok  # unreadable entry: checked again, then rewritten
    assert gate_ruleset(load_ruleset(toy_ruleset)).cached


def test_an_unwritable_cache_costs_only_the_speed_up(toy_ruleset: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CDS_CACHE_DIR", str(blocker / "cache"))
    assert gate_ruleset(load_ruleset(toy_ruleset)).ok
    assert not gate_ruleset(load_ruleset(toy_ruleset)).cached
    monkeypatch.setenv("CDS_CACHE_DIR", str(tmp_path / "off"))
    monkeypatch.setenv("CDS_CACHE", "off")
    gate_ruleset(load_ruleset(toy_ruleset))
    assert not (tmp_path / "off").exists()


def test_loaded_ruleset_cache_never_serves_stale_rules(toy_ruleset: Path, cache: Path) -> None:
    first = load_ruleset(toy_ruleset, use_cache=True)
    pickles = list((cache / "rulesets").glob("*.pickle"))
    assert len(pickles) == 1
    again = load_ruleset(toy_ruleset, use_cache=True)
    assert again is not first and again.full_digest == first.full_digest
    assert [r.spec.id for r in again.rules] == [r.spec.id for r in first.rules]
    request_fires = Engine(again).evaluate(_request(35), now=NOW)
    assert "toy-egfr" in request_fires.chosen

    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    rule.write_text(rule.read_text().replace("value: 40", "value: 30"))  # threshold lowered
    edited = load_ruleset(toy_ruleset, use_cache=True)
    assert edited.full_digest != first.full_digest
    assert edited.rule("toy-egfr").spec.thresholds["toy_egfr"].value == 30
    assert "toy-egfr" not in Engine(edited).evaluate(_request(35), now=NOW).chosen


def _request(egfr: float) -> dict:
    return {
        "hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": {"patient": {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1976-01-01"},
                     "observations": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
                         "resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
                         "code": {"coding": [{"system": "http://loinc.org", "code": "98979-8"}]},
                         "effectiveDateTime": "2026-10-01",
                         "valueQuantity": {"value": egfr, "unit": "mL/min/{1.73_m2}", "system": "http://unitsofmeasure.org",
                                           "code": "mL/min/{1.73_m2}"}}}]}},
    }


def test_cache_files_are_private_atomic_and_pruned(tmp_path: Path) -> None:
    from cds.cache import read_private, write_atomic

    for i in range(10):
        assert write_atomic(tmp_path / "c" / f"{i}.pickle", b"x" * i, keep=8)
        os.utime(tmp_path / "c" / f"{i}.pickle", (1000 + i, 1000 + i))
    left = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert left == [f"{i}.pickle" for i in range(2, 10)]  # the two oldest went
    assert read_private(tmp_path / "c" / "9.pickle") == b"x" * 9
    assert (tmp_path / "c" / "9.pickle").stat().st_mode & 0o077 == 0
    assert read_private(tmp_path / "c" / "missing.pickle") is None


def test_the_builtin_rulesets_validate() -> None:
    """The rule cases (rulesets/conftest.py) run on a ruleset loaded without validation: this test is
    where the README's test command checks the built-in rules the way `cds rules validate` does."""
    ruleset = load_validated()
    assert ruleset.errors == [] and ruleset.validated and ruleset.rules
