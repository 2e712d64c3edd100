"""Safe reload: only validated, tested rules go live; in-flight requests finish on the old engine."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cds._exceptions import RulesetError
from cds.authoring.reload import safe_reload
from cds.service.holder import EngineHolder, RulesetWatcher
from cds.authoring.testfile import load_test_file

NOW = "2026-11-01T09:00:00Z"


def _request(directory: Path, egfr: int) -> dict:
    path = directory / "probe.test.yaml"
    path.write_text(f"""\
rule: probe
now: "{NOW}"
cases:
  - name: probe
    patient: {{age: 50, gender: female}}
    data:
      - LOINC#98979-8 {egfr} mL/min/{{1.73_m2}} 1 month ago
    expect: silent
""")
    return load_test_file(path).cases[0].request


def _fires(engine, request: dict) -> bool:
    """Through the holder's snapshot (the service's one EngineHolder: rules run in worker processes)."""
    cards = engine.evaluate(request, now=NOW).response["cards"]
    return "toy-egfr" in {card["source"]["topic"]["code"] for card in cards}


def _raise_threshold(directory: Path, *, fix_tests: bool) -> None:
    rule = directory / "rules" / "toy-egfr.yaml"
    rule.write_text(rule.read_text().replace("value: 40", "value: 45"))
    if fix_tests:
        tests = directory / "rules" / "toy-egfr.test.yaml"
        tests.write_text(tests.read_text().replace("LOINC#98979-8 42", "LOINC#98979-8 47"))


def test_unchanged_folder_is_not_recompiled(toy_ruleset: Path) -> None:
    holder = EngineHolder.load(toy_ruleset)
    engine = holder.current()
    result = holder.reload()
    assert result.ok and not result.changed and holder.current() is engine


def test_good_change_is_served_and_in_flight_requests_keep_the_old_engine(toy_ruleset: Path, tmp_path: Path) -> None:
    holder = EngineHolder.load(toy_ruleset)
    request = _request(tmp_path, 42)
    in_flight = holder.current()
    assert not _fires(in_flight, request)
    _raise_threshold(toy_ruleset, fix_tests=True)
    result = holder.reload()
    assert result.ok and result.changed, result.reason
    assert result.previous_digest == in_flight.digest != result.digest == holder.current().digest
    assert _fires(holder.current(), request)
    assert not _fires(in_flight, request)  # the old engine still answers with the old rules


def test_invalid_change_keeps_the_old_rules_and_says_why(toy_ruleset: Path) -> None:
    holder = EngineHolder.load(toy_ruleset)
    engine = holder.current()
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    rule.write_text(rule.read_text().replace("egfr < toy_egfr", "egfr < 40 mmHg"))
    result = holder.reload()
    assert not result.ok and holder.current() is engine
    assert any("toy-egfr.yaml:17: [toy-egfr] error" in issue and "mmHg" in issue for issue in result.issues)
    assert "kept" in result.reason and result.to_json()["ok"] is False


def test_change_that_breaks_a_rule_test_is_refused(toy_ruleset: Path) -> None:
    holder = EngineHolder.load(toy_ruleset)
    engine = holder.current()
    _raise_threshold(toy_ruleset, fix_tests=False)
    result = holder.reload()
    assert not result.ok and holder.current() is engine
    assert result.issues == []
    assert len(result.test_failures) == 1 and "toy-egfr :: eGFR 42 is silent" in result.test_failures[0]


def test_start_up_refuses_a_ruleset_that_does_not_validate(toy_ruleset: Path) -> None:
    (toy_ruleset / "rules" / "toy-egfr.yaml").write_text("id: toy-egfr\n")
    with pytest.raises(RulesetError, match="cannot be served"):
        EngineHolder.load(toy_ruleset)


def test_swap_while_requests_run(toy_ruleset: Path, tmp_path: Path) -> None:
    holder = EngineHolder.load(toy_ruleset)
    old_digest = holder.current().digest
    request = _request(tmp_path, 42)
    outcomes: list[tuple[str, bool]] = []  # (digest of the engine the request used, fired)
    errors: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                engine = holder.current()  # once per request, as the service does
                outcomes.append((engine.digest, _fires(engine, request)))
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    _raise_threshold(toy_ruleset, fix_tests=True)
    result = holder.reload()
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert result.ok and result.changed
    assert errors == []
    assert {digest for digest, _ in outcomes} == {old_digest, result.digest}
    # every request got a consistent answer from the engine it started on: old rules silent, new rules fire
    assert all(fired == (digest == result.digest) for digest, fired in outcomes)


def test_safe_reload_adopts_any_holder_with_swap(toy_ruleset: Path) -> None:
    swapped = []
    _raise_threshold(toy_ruleset, fix_tests=True)
    result = safe_reload(swapped.append, toy_ruleset, current_digest="old")
    assert result.ok and len(swapped) == 1 and swapped[0].digest == result.digest
    assert not swapped[0].include_drafts


def test_watcher_reloads_on_file_change(toy_ruleset: Path) -> None:
    holder = EngineHolder.load(toy_ruleset)
    results = []
    done = threading.Event()
    watcher = RulesetWatcher(holder, debounce_ms=100, on_result=lambda r: (results.append(r), done.set())).start()
    try:
        time.sleep(0.5)
        _raise_threshold(toy_ruleset, fix_tests=True)
        assert done.wait(30), "the watcher did not reload"
    finally:
        watcher.stop()
    assert results[-1].ok and holder.current().digest == results[-1].digest
