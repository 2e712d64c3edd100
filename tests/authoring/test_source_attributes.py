"""Every rule carries its HTI-1 source attributes, FDA criterion-4 basis and (when active) an approval.

Missing or wrong metadata is a validation error at file:line; a declared "not used" that the
conditions contradict is an error; a passed review date is a warning.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from click.testing import CliRunner

from cds.cli import cli
from cds.rules.loader import load_ruleset
from cds.rules.schema import ATTRIBUTE_USES
from cds.rules.validators import check_review_dates

from .conftest import RULESETS


def _validate(directory: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["rules", "validate", str(directory)])
    return result.exit_code, result.output.splitlines()


def _has(lines: list[str], *parts: str) -> bool:
    return any(all(p in line for p in parts) for line in lines)


def test_every_shipped_rule_has_source_attributes_criterion_4_and_approval() -> None:
    ruleset = load_ruleset(RULESETS)
    assert ruleset.rules
    for rule in ruleset.rules:
        spec = rule.spec
        assert spec.source_attributes.citation and spec.source_attributes.released
        assert spec.fda_criterion_4.inputs, spec.id
        if spec.status == "active":
            assert spec.approval is not None, spec.id
        sections = dict(spec.transparency())
        attributes = next(rows for title, rows in sections.items() if "HTI-1" in title)
        assert len(attributes) == 5 + len(ATTRIBUTE_USES) == 14  # (1)-(3), (4) twice, (5)-(13)
        basis = next(rows for title, rows in sections.items() if "criterion 4" in title)
        assert ("Known limitations", spec.limitations.strip()) in basis  # type: ignore[union-attr]


def test_age_and_pregnancy_rules_declare_their_use() -> None:
    spec = load_ruleset(RULESETS).rule("metformin-start").spec
    assert spec.source_attributes.uses.date_of_birth.used
    assert spec.source_attributes.uses.health_status_assessments.used
    assert not spec.source_attributes.uses.race.used


def test_a_missing_attribute_is_an_error_with_file_and_line(toy_ruleset: Path) -> None:
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    text = rule.read_text()
    rule.write_text(text.replace("    language: {used: false, how: not read}\n", "")
                    .replace("  funding: none (test fixture)\n", ""))
    code, lines = _validate(toy_ruleset)
    assert code == 1
    uses_line = text.splitlines().index("  uses:") + 1 - 1  # one line (funding) removed above it
    assert _has(lines, f"toy-egfr.yaml:{uses_line}: [toy-egfr] error", "source_attributes.uses.language: Field required")
    assert _has(lines, "toy-egfr.yaml:", "[toy-egfr] error", "source_attributes.funding: Field required")


def test_a_rule_without_the_blocks_is_refused(toy_ruleset: Path) -> None:
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    text = rule.read_text()
    rule.write_text(text[:text.index("source_attributes:")])
    code, lines = _validate(toy_ruleset)
    assert code == 1
    assert _has(lines, "toy-egfr.yaml:1: [toy-egfr] error: source_attributes: Field required")
    assert _has(lines, "toy-egfr.yaml:1: [toy-egfr] error: fda_criterion_4: Field required")


def test_approval_required_for_active_rules_optional_for_drafts(toy_ruleset: Path) -> None:
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    text = rule.read_text()
    without = text[:text.index("approval:")]
    rule.write_text(without)
    code, lines = _validate(toy_ruleset)
    assert code == 1
    assert _has(lines, "[toy-egfr] error", "an active rule needs approval")
    rule.write_text(without.replace("status: active", "status: draft"))
    code, lines = _validate(toy_ruleset)
    assert code == 0, lines


def test_approval_dates_are_checked(toy_ruleset: Path) -> None:
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    text = rule.read_text()
    rule.write_text(text.replace('next_review: "2099-01-01"', 'next_review: "2025-12-31"'))
    code, lines = _validate(toy_ruleset)
    assert code == 1
    assert _has(lines, "[toy-egfr] error", "next_review (2025-12-31) must be after approved_on (2026-01-01)")
    rule.write_text(text.replace('approved_on: "2026-01-01"', 'approved_on: "2026-02-30"'))
    code, lines = _validate(toy_ruleset)
    assert _has(lines, "[toy-egfr] error", "approval.approved_on", "not a calendar date")


def test_a_passed_review_date_is_a_warning(toy_ruleset: Path) -> None:
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    rule.write_text(rule.read_text().replace('next_review: "2099-01-01"', 'next_review: "2026-06-01"'))
    ruleset = load_ruleset(toy_ruleset)
    line = rule.read_text().splitlines().index('  next_review: "2026-06-01"') + 1
    warnings = check_review_dates(ruleset, today=date(2026, 12, 2))
    assert [(w.rule, w.line, w.severity) for w in warnings] == [("toy-egfr", line, "warning")]
    assert "has passed" in warnings[0].message
    assert check_review_dates(ruleset, today=date(2026, 5, 1)) == []
    code, lines = _validate(toy_ruleset)  # the real clock: today is after 2026-06-01
    assert code == 0 and _has(lines, "[toy-egfr] warning", "approval.next_review 2026-06-01 has passed")


def test_not_used_contradicted_by_the_conditions_is_an_error(toy_ruleset: Path) -> None:
    rule = toy_ruleset / "rules" / "toy-egfr.yaml"
    text = rule.read_text()
    rule.write_text(text.replace("when: egfr < toy_egfr", "when:\n  all:\n    - egfr < toy_egfr\n    - age >= 18"))
    code, lines = _validate(toy_ruleset)
    assert code == 1
    line = rule.read_text().splitlines().index("    date_of_birth: {used: false, how: not read}") + 1
    assert _has(lines, f"toy-egfr.yaml:{line}: [toy-egfr] error",
                "source_attributes.uses.date_of_birth: says not used, but the conditions read age")
    rule.write_text(rule.read_text().replace("date_of_birth: {used: false, how: not read}",
                                             "date_of_birth: {used: true, how: adults only}"))
    assert _validate(toy_ruleset)[0] == 0


def test_through_a_definition_counts_too(make_ruleset) -> None:  # type: ignore[no-untyped-def]
    """sir-suspected reads age and BMI-for-age only through shared definitions (sir_suspected_criteria)."""
    directory = make_ruleset("sir-suspected")
    rule = directory / "rules" / "sir-suspected.yaml"
    text = rule.read_text()
    assert "    sex:\n      used: true\n" in text
    rule.write_text(text.replace("    sex:\n      used: true\n", "    sex:\n      used: false\n", 1))
    code, lines = _validate(directory)
    assert code == 1
    assert _has(lines, "[sir-suspected] error", "source_attributes.uses.sex: says not used", "bmi_z")


def test_the_json_schema_requires_the_blocks() -> None:
    """Editors using `cds rules schema` see the same requirement as the loader."""
    import json

    result = CliRunner().invoke(cli, ["rules", "schema"])
    schema = json.loads(result.output)
    assert {"source_attributes", "fda_criterion_4"} <= set(schema["required"])
    uses = schema["$defs"]["AttributeUses"]
    assert set(uses["required"]) == set(ATTRIBUTE_USES) and len(ATTRIBUTE_USES) == 9
    assert set(schema["$defs"]["ApprovalSpec"]["required"]) == {"approved_by", "approved_on", "next_review"}
