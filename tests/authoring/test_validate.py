"""``cds rules validate`` lists every problem at once with file, line and rule id, and exits 1."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cds.cli import cli

from .conftest import RULE_METADATA, TOY_RULE

BROKEN = """\
id: broken
title: Broken rule for validation tests
version: 1.0.0
status: active
description: Every kind of mistake an author can make, one per line.
hooks: [patient-view]
source:
  label: Fixture
evidence:
  - label: Fixture
thresholds:
  no_unit:
    value: 30
    source: fixture
  bad_unit:
    value: 30
    unit: mmHg
    source: fixture
when:
  all:
    - egfr < no_unit
    - egfr < bad_unit
    - creatinine_magic > 3
    - {condition: no-such-valueset}
cards:
  - indicator: warning
    summary: "{{ patient.name }} {{ lab.egfr }} {{ lab.hba1c }} {{ lab.alt }} this is a rather long static text that goes on"
    detail: "{{ mystery }}"
""" + RULE_METADATA


def _run(directory: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["rules", "validate", str(directory)])
    return result.exit_code, result.output.splitlines()


def _has(lines: list[str], *parts: str) -> bool:
    return any(all(p in line for p in parts) for line in lines)


def test_valid_ruleset_exits_zero(toy_ruleset: Path) -> None:
    code, lines = _run(toy_ruleset)
    assert code == 0, lines
    assert lines[-1].startswith("2 rules, 0 errors")


def test_every_problem_with_file_line_and_rule(toy_ruleset: Path) -> None:
    rules = toy_ruleset / "rules"
    (rules / "broken.yaml").write_text(BROKEN)
    (rules / "dup.yaml").write_text(TOY_RULE)  # same id as toy-egfr.yaml, wrong stem
    (rules / "syntax.yaml").write_text("id: syntax\ntitle: [unclosed\n")
    (rules / "extra.yaml").write_text(TOY_RULE.replace("id: toy-egfr", "id: extra").replace("hooks:", "colour: red\nhooks:"))
    no_source = "source:\n  label: Authoring test fixture\n  url: https://example.org/toy\n"
    (rules / "nosource.yaml").write_text(TOY_RULE.replace("id: toy-egfr", "id: nosource").replace(no_source, ""))
    code, lines = _run(toy_ruleset)
    assert code == 1
    assert _has(lines, "broken.yaml:21: [broken] error", "threshold for 'egfr' has no unit")
    assert _has(lines, "broken.yaml:22: [broken] error", "mmHg")
    assert _has(lines, "broken.yaml:23: [broken] error", "unknown fact 'creatinine_magic'")
    assert _has(lines, "broken.yaml:24: [broken] error", "unknown value set 'no-such-valueset'")
    assert _has(lines, "broken.yaml:27: [broken] error", "summary can reach")
    assert _has(lines, "broken.yaml:28: [broken] error", "unknown template variable 'mystery'")
    assert _has(lines, "dup.yaml:1: [toy-egfr] error", "id must equal the file name stem 'dup'")
    assert _has(lines, "toy-egfr.yaml:1: [toy-egfr] error", "duplicate rule id (also in")
    assert _has(lines, "syntax.yaml:3: error: YAML syntax")
    assert _has(lines, "extra.yaml:6: [extra] error: colour: unknown field")
    assert _has(lines, "nosource.yaml:1: [nosource] error: source: Field required")
    assert _has(lines, "broken.yaml:1: [broken] error: no tests")


def test_test_file_problems_are_validation_errors(toy_ruleset: Path) -> None:
    (toy_ruleset / "rules" / "toy-egfr.test.yaml").write_text(
        'rule: toy-egfr\nnow: "2026-11-01"\ncases:\n  - name: abc\n    expect: fires\n    data: [FOO#1]\n')
    code, lines = _run(toy_ruleset)
    assert code == 1
    assert _has(lines, "toy-egfr.test.yaml:6: [toy-egfr] error", "unknown code system 'FOO'")


def test_a_test_file_needs_fires_and_silent_cases(toy_ruleset: Path) -> None:
    path = toy_ruleset / "rules" / "toy-egfr.test.yaml"
    path.write_text(path.read_text().replace("expect: silent", "expect: fires"))
    code, lines = _run(toy_ruleset)
    assert code == 1
    assert _has(lines, "toy-egfr.test.yaml:1: [toy-egfr] error: no 'silent' case")


def test_a_rule_without_tests_is_an_error(toy_ruleset: Path) -> None:
    (toy_ruleset / "rules" / "toy-egfr.test.yaml").unlink()
    code, lines = _run(toy_ruleset)
    assert code == 1
    assert _has(lines, "[toy-egfr] error: no tests: write toy-egfr.test.yaml")


def test_strict_turns_warnings_into_failure(toy_ruleset: Path) -> None:
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    rule.write_text(rule.read_text().replace(
        "thresholds:\n", "thresholds:\n  never_used: {value: 1, unit: a, source: authoring test fixture}\n", 1))
    assert _run(toy_ruleset)[0] == 0
    result = CliRunner().invoke(cli, ["rules", "validate", str(toy_ruleset), "--strict"])
    assert result.exit_code == 1
    assert "threshold 'never_used' is never used" in result.output


def test_service_loader_refuses_invalid_rulesets(toy_ruleset: Path) -> None:
    import pytest

    from cds._exceptions import RulesetError
    from cds.engine import Engine

    (toy_ruleset / "rules" / "broken.yaml").write_text(BROKEN)
    with pytest.raises(RulesetError, match="broken.yaml:23"):
        Engine.load(toy_ruleset)


def test_a_pass_testing_too_many_facts_is_refused_by_validate(toy_ruleset: Path) -> None:
    """durable_rules rejects facts with more than ~252 properties: validate says so before the engine does."""
    from cds.rules.loader import load_ruleset

    catalog = load_ruleset(toy_ruleset, strict=False).catalog
    tests = [name for name, spec in sorted(catalog.items()) if spec.type == "bool"]
    tests += [f"{name} >= 0" for name, spec in sorted(catalog.items()) if spec.type == "number" and not spec.quantity]
    assert len(tests) >= 241
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    conditions = "".join(f"    - {test}\n" for test in tests[:241])
    rule.write_text(rule.read_text().replace("when: egfr < toy_egfr", "when:\n  any:\n" + conditions, 1))
    code, lines = _run(toy_ruleset)
    assert code == 1
    assert any("facts; durable_rules accepts at most 240" in line for line in lines), lines


def test_misspelt_template_names_are_errors(toy_ruleset: Path) -> None:
    """A typo after the dot would print "not recorded" in front of a clinician: validate refuses it."""
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    rule.write_text(rule.read_text().replace(
        'detail: "eGFR {{ lab.egfr }}"',
        'detail: "eGFR {{ lab.egfr }} {{ fact.egrf }} {{ conditions.heart_faliure }} {{ conditions.heart_failure }}"', 1))
    code, lines = _run(toy_ruleset)
    assert code == 1
    assert _has(lines, "[toy-egfr] error: unknown name fact.egrf in a template")
    assert _has(lines, "[toy-egfr] error: unknown name conditions.heart_faliure in a template")
    assert not _has(lines, "conditions.heart_failure in a template")
