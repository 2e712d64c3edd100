"""Fixtures for the authoring tests: small, real rulesets folders built in tmp_path.

Each test copies the shipped value sets, labs and shared definitions, and only the rule files it
needs, so it exercises the real loader and Engine without depending on rules other engineers are
still writing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

RULESETS = Path(__file__).resolve().parents[2] / "rulesets"
NOW = "2026-11-01T09:00:00Z"


def copy_ruleset(target: Path, rules: tuple[str, ...] = ("metformin-renal",)) -> Path:
    """A rulesets folder at ``target`` with the shared files and the given rules (and their tests)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("valuesets", "reference"):
        if (RULESETS / name).is_dir():
            shutil.copytree(RULESETS / name, target / name)
    for name in ("labs.yaml", "definitions.yaml"):
        shutil.copy(RULESETS / name, target / name)
    (target / "rules").mkdir()
    for rule in rules:
        shutil.copy(RULESETS / "rules" / f"{rule}.yaml", target / "rules" / f"{rule}.yaml")
        test = RULESETS / "rules" / f"{rule}.test.yaml"
        if test.exists():
            shutil.copy(test, target / "rules" / test.name)
    return target


@pytest.fixture
def make_ruleset(tmp_path: Path) -> Callable[..., Path]:
    def make(*rules: str, name: str = "rulesets") -> Path:
        return copy_ruleset(tmp_path / name, rules or ("metformin-renal",))

    return make


# The metadata block every rule carries (HTI-1 source attributes, FDA criterion-4 basis, approval):
# appended to the fixture rules so each test checks what it is about, not the missing metadata.
RULE_METADATA = """\
source_attributes:
  citation: Authoring test fixture https://example.org/toy
  developer: test authors
  funding: none (test fixture)
  released: "2026-01-01"
  uses:
    race: {used: false, how: not read}
    ethnicity: {used: false, how: not read}
    language: {used: false, how: not read}
    sexual_orientation: {used: false, how: not read}
    gender_identity: {used: false, how: not read}
    sex: {used: false, how: not read}
    date_of_birth: {used: false, how: not read}
    social_determinants_of_health: {used: false, how: not read}
    health_status_assessments: {used: false, how: not read}
fda_criterion_4:
  intended_use: exercise the authoring tools in tests
  intended_user: test suite
  patient_population: synthetic test patients
  inputs:
    - {input: eGFR, how_to_obtain: a laboratory Observation in mL/min/1.73 m2}
  logic: fires when the recent eGFR is below the threshold
  validation: the rule's own test cases
limitations: a test fixture, not for clinical use
approval:
  approved_by: test authors
  approved_on: "2026-01-01"
  next_review: "2099-01-01"
"""

# A small self-contained rule with an eGFR threshold of its own: tests change it without touching
# the shared definitions other rules use.
TOY_RULE = """\
id: toy-egfr
title: Toy eGFR rule for authoring tests
version: 1.0.0
status: active
description: Fires on patient-view when a recent eGFR is below the toy threshold.
hooks: [patient-view]
source:
  label: Authoring test fixture
  url: https://example.org/toy
evidence:
  - label: Authoring test fixture
thresholds:
  toy_egfr:
    value: 40
    unit: mL/min/{1.73_m2}
    source: test fixture
when: egfr < toy_egfr
cards:
  - indicator: warning
    summary: "eGFR {{ lab.egfr.value|num }} below the toy threshold"
    detail: "eGFR {{ lab.egfr }}"
""" + RULE_METADATA

TOY_TESTS = """\
rule: toy-egfr
now: "2026-11-01T09:00:00Z"
defaults:
  patient: {age: 50, gender: female}
cases:
  - name: eGFR 35 fires
    data:
      - LOINC#98979-8 35 mL/min/{1.73_m2} 1 month ago
    expect: fires
    indicator: warning
  - name: eGFR 42 is silent
    data:
      - LOINC#98979-8 42 mL/min/{1.73_m2} 1 month ago
    expect: silent
"""


@pytest.fixture
def toy_ruleset(make_ruleset: Callable[..., Path]) -> Path:
    directory = make_ruleset("sir-suspected")
    (directory / "rules" / "toy-egfr.yaml").write_text(TOY_RULE)
    (directory / "rules" / "toy-egfr.test.yaml").write_text(TOY_TESTS)
    return directory
