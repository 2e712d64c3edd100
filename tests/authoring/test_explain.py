"""``cds explain``: facts with units, dates and sources, ignored values, and the first failed condition."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cds.authoring.explain import explain, render_text
from cds.authoring.testfile import load_test_file
from cds.cli import cli
from cds.engine import Engine

CASES = """\
rule: metformin-renal
now: "2026-11-01T09:00:00Z"
defaults:
  patient: {age: 58, gender: male}
cases:
  - name: drafted metformin at eGFR 52
    hook: order-sign
    data:
      - LOINC#98979-8 52 mL/min/{1.73_m2} 1 month ago id egfr-1
      - LOINC#98979-8 20 mL/min 2 days ago id crcl-1
      - RXNORM#861007 draft id draft-1
    expect: silent
  - name: drafted metformin at eGFR 25
    hook: order-sign
    data:
      - LOINC#98979-8 25 mL/min/{1.73_m2} 1 month ago id egfr-1
      - RXNORM#861007 draft id draft-1
    expect: fires
"""


def _cases(directory: Path) -> list:
    path = directory / "rules" / "metformin-renal.test.yaml"
    path.write_text(CASES)
    return load_test_file(path).cases


def test_not_fired_names_the_value_the_threshold_and_the_source(make_ruleset) -> None:
    directory = make_ruleset("metformin-renal")
    case = _cases(directory)[0]
    engine = Engine.load(directory)
    explanation = explain(engine, case.request, now=case.now)
    rule = explanation.rules[0]
    assert not rule.fired
    critical = rule.cards[0]
    assert not critical.holds and not critical.disagrees
    assert critical.reason.startswith("none of: (egfr = 52 mL/min/{1.73_m2} (52 mL/min/{1.73_m2} on 2026-10-01, "
                                      "Observation/egfr-1); needed egfr < metformin_egfr_start (45 mL/min/{1.73_m2}))")
    assert "metformin_renal_equivalent" in critical.reason  # v3: the renal-failure equivalent is the other way in
    text = render_text(explanation)
    assert "egfr  52 mL/min/{1.73_m2} on 2026-10-01  [Observation/egfr-1]" in text
    assert "values ignored:" in text and "Observation/crcl-1" in text
    assert "metformin: metformin hydrochloride" in text or "metformin:" in text
    assert "drafted" in text


def test_fired_rule_shows_card_and_agrees_with_engine(make_ruleset) -> None:
    directory = make_ruleset("metformin-renal")
    case = _cases(directory)[1]
    explanation = explain(Engine.load(directory), case.request, now=case.now, rule="metformin-renal")
    rule = explanation.rules[0]
    assert rule.fired and rule.chosen == 0
    assert rule.cards[0].holds and rule.cards[0].matched_by_engine
    assert rule.cards[2].reason == "hook is order-sign, this card is for patient-view"  # v3: card 1 is the renal equivalent
    assert "FIRED card 0 (critical)" in render_text(explanation)


def test_cli_on_a_request_file_and_on_a_test_case(make_ruleset, tmp_path: Path) -> None:
    directory = make_ruleset("metformin-renal")
    case = _cases(directory)[0]
    request = tmp_path / "request.json"
    request.write_text(json.dumps(case.request))
    runner = CliRunner()
    result = runner.invoke(cli, ["explain", str(request), "--rulesets", str(directory), "--now", "2026-11-01T09:00:00Z",
                                 "--rule", "metformin-renal"])
    assert result.exit_code == 0, result.output
    assert "metformin-renal 1.1.1 (active): not fired" in result.output
    assert "needed egfr < metformin_egfr_start (45 mL/min/{1.73_m2})" in result.output
    by_case = runner.invoke(cli, ["explain", str(directory / "rules" / "metformin-renal.test.yaml"), "--case", "25"])
    assert by_case.exit_code == 0, by_case.output
    assert by_case.output.startswith("Case: drafted metformin at eGFR 25")
    assert "FIRED card 0 (critical)" in by_case.output
    unknown = runner.invoke(cli, ["explain", str(request), "--rulesets", str(directory), "--rule", "nope"])
    assert unknown.exit_code != 0 and "no rule 'nope'" in unknown.output


def test_draft_rules_are_reported_as_not_run(make_ruleset) -> None:
    directory = make_ruleset("metformin-renal")
    path = directory / "rules" / "metformin-renal.yaml"
    path.write_text(path.read_text().replace("status: active", "status: draft"))
    case = _cases(directory)[1]
    explanation = explain(Engine.load(directory), case.request, now=case.now)
    rule = explanation.rules[0]
    assert not rule.ran and not rule.fired
    assert "draft: not run" in (rule.note or "")
    assert rule.cards[0].holds  # it would have fired: the explanation says so
