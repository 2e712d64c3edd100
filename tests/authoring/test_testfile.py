"""Test files load with every problem located, and become real CDS Hooks requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds.authoring.testfile import TestFileError, load_test_file
from cds.engine import Engine


def _write(tmp_path: Path, text: str, name: str = "toy.test.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
rule: toy
now: "2026-11-01"
cases:
  - name: first
    expect: fires
    data:
      - LOINC#1 38 uIU/mL
      - FOO#2
  - name: second
    expect: silent
    data:
      - SNOMED#1 flying
""")
    with pytest.raises(TestFileError) as info:
        load_test_file(path)
    problems = info.value.problems
    assert [line for line, _ in problems] == [8, 12]
    assert "unknown code system 'FOO'" in problems[0][1]
    assert "Condition statuses are" in problems[1][1]
    assert f"{path}:8:" in str(info.value)


def test_schema_errors_are_located(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
rule: other
now: "2026-11-01"
cases:
  - name: first
    expect: maybe
    colour: blue
""")
    with pytest.raises(TestFileError) as info:
        load_test_file(path)
    text = str(info.value)
    assert ":5: cases.0.expect" in text
    assert ":6: cases.0.colour: unknown field" in text


def test_rule_must_match_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, 'rule: other\nnow: "2026-11-01"\ncases:\n  - {name: abc, expect: silent}\n')
    with pytest.raises(TestFileError, match="must equal the file name stem 'toy'"):
        load_test_file(path)


def test_order_hooks_put_drafts_in_context_and_patient_view_keeps_them_in_prefetch(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
rule: toy
now: "2026-11-01T09:00:00Z"
defaults:
  patient: {age: 34, gender: female, bmi: 22.5}
  data: [RXNORM#861007 draft]
cases:
  - {name: sign, hook: order-sign, expect: fires}
  - {name: view, expect: silent}
""")
    sign, view = load_test_file(path).cases
    drafts = sign.request["context"]["draftOrders"]["entry"]
    assert [e["resource"]["status"] for e in drafts] == ["draft"]
    assert sign.request["context"]["selections"] == ["MedicationRequest/medicationRequest-1"]
    assert sign.request["hook"] == "order-sign"
    records = [e["resource"]["resourceType"] for e in sign.request["prefetch"]["records"]["entry"]]
    assert records == ["Observation"]  # the BMI from the patient header
    assert "draftOrders" not in view.request["context"]
    assert len(view.request["prefetch"]["records"]["entry"]) == 2


def test_patient_header_gives_age_sex_and_body_measures_the_engine_reads(make_ruleset, tmp_path: Path) -> None:
    path = _write(tmp_path, """\
rule: toy
now: "2026-11-01T09:00:00Z"
cases:
  - name: header
    patient: {age: 34.5, gender: female, bmi: 22.5, weight: "176 [lb_av] 2 months ago"}
    expect: silent
""")
    case = load_test_file(path).cases[0]
    engine = Engine.load(make_ruleset())
    facts = engine.evaluate(case.request, now=case.now).facts
    assert facts.sex == "female"
    assert 34.4 < facts.age_years < 34.6
    assert facts.values["bmi"] == 22.5
    assert round(facts.values["weight"], 1) == 79.8
