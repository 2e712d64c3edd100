"""Unit normalisation (pathways.md section 1, "Labs"): every conversion, directly and through the facts.

Each lab value must reach the rules in its canonical unit; a unit that cannot be converted is ignored,
reported in ``facts.ignored`` and never compared raw.
"""

from __future__ import annotations

import pytest

from cds.units import UnitError, canonical_unit, convert

from .conftest import (
    ADIPONECTIN,
    ALT,
    BMI,
    EGFR,
    FASTING_GLUCOSE,
    FASTING_INSULIN,
    GLUCOSE,
    HBA1C,
    HEIGHT,
    LEPTIN,
    TG,
    WEIGHT,
    bundle,
    obs,
    patient,
)

# --- cds.units directly -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "quantity", "expected"),
    [
        # insulin -> pmol/L: uIU/mL = u[IU]/mL = mU/L = mIU/L, x 6.0
        (38, "uIU/mL", "insulin", 228.0),
        (38, "µIU/mL", "insulin", 228.0),
        (38, "μIU/mL", "insulin", 228.0),  # Greek mu as well as the micro sign
        (38, "u[IU]/mL", "insulin", 228.0),
        (38, "mU/L", "insulin", 228.0),
        (38, "mIU/L", "insulin", 228.0),
        (228, "pmol/L", "insulin", 228.0),
        # triglycerides mg/dL / 88.57; glucose mg/dL / 18.0
        (500, "mg/dL", "triglycerides", 500 / 88.57),
        (2.0, "mmol/L", "triglycerides", 2.0),
        (90, "mg/dL", "glucose", 5.0),
        (5.0, "mmol/L", "glucose", 5.0),
        # HbA1c IFCC mmol/mol -> NGSP %: 0.0915 x + 2.15
        (48, "mmol/mol", "hba1c", 0.0915 * 48 + 2.15),
        (6.5, "%", "hba1c", 6.5),
        # eGFR per 1.73 m2 spellings
        (50, "mL/min/{1.73_m2}", "egfr", 50.0),
        (50, "mL/min/1.73m2", "egfr", 50.0),
        (50, "mL/min/1.73 m2", "egfr", 50.0),
        (50, "mL/min/1.73 m²", "egfr", 50.0),
        # ALT U/L = IU/L
        (80, "U/L", "alt", 80.0),
        (80, "IU/L", "alt", 80.0),
        # leptin ng/mL = ug/L
        (10, "ng/mL", "leptin", 10.0),
        (10, "ug/L", "leptin", 10.0),
        (10, "µg/L", "leptin", 10.0),
        # adiponectin mg/L = ug/mL; ng/mL / 1000
        (8, "mg/L", "adiponectin", 8.0),
        (8, "ug/mL", "adiponectin", 8.0),
        (8000, "ng/mL", "adiponectin", 8.0),
        # weight kg: [lb_av] x 0.45359237, g / 1000
        (100, "[lb_av]", "weight", 45.359237),
        (70000, "g", "weight", 70.0),
        (70, "kg", "weight", 70.0),
        # height m: cm, [in_i]
        (170, "cm", "height", 1.70),
        (67, "[in_i]", "height", 67 * 0.0254),
        (1.7, "m", "height", 1.7),
        # BMI kg/m2
        (22.5, "kg/m2", "bmi", 22.5),
        # insulin doses: U, [iU], IU, units
        (10, "U", "insulin_dose", 10.0),
        (10, "[iU]", "insulin_dose", 10.0),
        (10, "IU", "insulin_dose", 10.0),
        (10, "units", "insulin_dose", 10.0),
    ],
)
def test_convert(value: float, unit: str, quantity: str, expected: float) -> None:
    assert convert(value, unit, quantity) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("unit", "quantity"),
    [
        ("mL/min", "egfr"),  # creatinine clearance, not eGFR (codes.md E: Synthea)
        ("mg", "insulin"),
        ("pmol/L", "glucose"),
        ("mg/dL", "hba1c"),
        ("ng/mL", "alt"),
        ("stone", "weight"),
        ("ft", "height"),
        ("mg", "insulin_dose"),
        (None, "insulin"),
        ("", "glucose"),
    ],
)
def test_unconvertible_units_raise(unit: str | None, quantity: str) -> None:
    with pytest.raises(UnitError):
        convert(1.0, unit, quantity)


def test_unknown_quantity_raises() -> None:
    with pytest.raises(UnitError):
        convert(1.0, "mg", "cholesterol")
    with pytest.raises(UnitError):
        canonical_unit("cholesterol")


# --- through the facts ---------------------------------------------------------------------------

THROUGH_FACTS = [
    # (fact, loinc, value, unit, expected canonical value)
    ("fasting_insulin", FASTING_INSULIN, 38, "uIU/mL", 228.0),
    ("fasting_insulin", FASTING_INSULIN, 38, "u[IU]/mL", 228.0),
    ("fasting_insulin", FASTING_INSULIN, 38, "mU/L", 228.0),
    ("fasting_insulin", FASTING_INSULIN, 38, "mIU/L", 228.0),
    ("fasting_insulin", FASTING_INSULIN, 200, "pmol/L", 200.0),
    ("triglycerides", TG, 500, "mg/dL", 500 / 88.57),
    ("fasting_glucose", FASTING_GLUCOSE, 126, "mg/dL", 7.0),
    ("lowest_glucose", GLUCOSE, 50, "mg/dL", 50 / 18.0),
    ("hba1c", HBA1C, 48, "mmol/mol", 0.0915 * 48 + 2.15),
    ("hba1c", HBA1C, 7.1, "%", 7.1),
    ("egfr", EGFR, 42, "mL/min/{1.73_m2}", 42.0),
    ("egfr", EGFR, 42, "mL/min/1.73m2", 42.0),
    ("alt", ALT, 90, "IU/L", 90.0),
    ("alt", ALT, 90, "U/L", 90.0),
    ("leptin", LEPTIN, 3.5, "ug/L", 3.5),
    ("leptin", LEPTIN, 3.5, "ng/mL", 3.5),
    ("adiponectin", ADIPONECTIN, 9, "ug/mL", 9.0),
    ("adiponectin", ADIPONECTIN, 9000, "ng/mL", 9.0),
    ("weight", WEIGHT, 154, "[lb_av]", 154 * 0.45359237),
    ("weight", WEIGHT, 65000, "g", 65.0),
    ("height", HEIGHT, 170, "cm", 1.70),
    ("height", HEIGHT, 67, "[in_i]", 67 * 0.0254),
    ("height", HEIGHT, 1.7, "m", 1.7),
    ("bmi", BMI, 24.2, "kg/m2", 24.2),
]


@pytest.mark.parametrize(("fact", "loinc", "value", "unit", "expected"), THROUGH_FACTS,
                         ids=[f"{t[0]}-{t[3]}" for t in THROUGH_FACTS])
def test_lab_value_reaches_rules_in_canonical_unit(facts, fact, loinc, value, unit, expected) -> None:
    result = facts(obs(loinc, value, unit, 20))
    assert result.values[fact] == pytest.approx(expected, rel=1e-6)
    assert result.values[f"{fact}_known"] is True
    assert result.labs[fact].unit == canonical_unit(_quantity(fact))
    assert result.ignored == []


def _quantity(fact: str) -> str:
    return {
        "fasting_insulin": "insulin", "lowest_glucose": "glucose", "fasting_glucose": "glucose",
    }.get(fact, fact)


def test_unit_from_display_when_code_missing(facts) -> None:
    """Quantity.code absent: Quantity.unit is read (µIU/mL with the micro sign)."""
    result = facts(obs(FASTING_INSULIN, 38, "µIU/mL", 20, code=None))
    assert result.values["fasting_insulin"] == pytest.approx(228.0)


def test_original_value_is_kept_for_explanation(facts) -> None:
    result = facts(obs(FASTING_INSULIN, 38, "uIU/mL", 20))
    lab = result.labs["fasting_insulin"]
    assert lab.unit == "pmol/L"
    assert "38" in lab.original and "uIU/mL" in lab.original
    assert "228 pmol/L" in str(lab)


def test_egfr_in_plain_ml_min_is_a_clearance_not_an_egfr(facts) -> None:
    """pathways.md 1: plain mL/min is a clearance, not an eGFR: absent (reported), never unreadable."""
    result = facts(obs(EGFR, 60, "mL/min", 20, rid="egfr-plain"))
    assert "egfr" not in result.values
    assert result.values["egfr_known"] is False
    assert result.values["egfr_last_known"] is False
    assert result.values["egfr_unreadable"] is False
    [ignored] = result.ignored
    assert ignored.fact == "egfr" and ignored.resource == "Observation/egfr-plain"
    assert "mL/min" in ignored.reason


@pytest.mark.parametrize("unit", ["mL/min/m2", "mg/dL"])
def test_egfr_in_unconvertible_unit_is_unreadable_and_named(facts, unit) -> None:
    """v3 (pathways.md 1): a unit that cannot be converted = could not be read, never compared raw."""
    result = facts(obs(EGFR, 60, unit, 20, rid="egfr-odd"))
    assert "egfr" not in result.values
    assert result.values["egfr_known"] is False
    assert result.values["egfr_unreadable"] is True
    assert result.values["egfr_recorded"] is True
    bad = result.unreadable["egfr"]
    assert bad.resource == "Observation/egfr-odd" and unit in bad.reason and unit in bad.raw
    assert str(bad).startswith("eGFR of ") and "could not be read ('60 " in str(bad)


def test_unconvertible_newer_value_falls_back_to_older_valid_one(facts) -> None:
    """The ignored newer value is never compared; the older convertible value in the window is used."""
    result = facts(obs(EGFR, 25, "mL/min", 5, rid="new"), obs(EGFR, 55, "mL/min/{1.73_m2}", 40, rid="old"))
    assert result.values["egfr"] == 55.0
    assert result.labs["egfr"].resource == "Observation/old"
    assert [i.resource for i in result.ignored] == ["Observation/new"]


def test_insulin_in_unconvertible_unit_never_fires_sir_suspected(evaluate) -> None:
    """38 'mg' would be 38 (or 228) if compared raw: it must be ignored and no card must fire."""
    payload = bundle(obs(FASTING_INSULIN, 380, "mg", 20, rid="ins-mg"), obs(BMI, 22.5, "kg/m2", 20), pt=patient(40))
    result = evaluate(payload)
    assert result.facts.values["fasting_insulin_known"] is False
    assert result.facts.values["fasting_insulin_unreadable"] is True
    assert result.facts.unreadable["fasting_insulin"].resource == "Observation/ins-mg"
    assert "mg" in result.facts.unreadable["fasting_insulin"].reason
    assert "sir-suspected" not in result.matched
    assert result.cards == []


def test_control_same_insulin_in_uiu_fires_sir_suspected(evaluate) -> None:
    """Control for the test above: the same patient with a convertible unit does fire."""
    payload = bundle(obs(FASTING_INSULIN, 38, "uIU/mL", 20), obs(BMI, 22.5, "kg/m2", 20), pt=patient(40))
    result = evaluate(payload)
    assert "sir-suspected" in result.matched


def test_alt_uln_from_reference_range_else_40(facts) -> None:
    with_range = obs(ALT, 66, "U/L", 20, referenceRange=[{"high": {"value": 33, "unit": "U/L", "code": "U/L"}}])
    assert facts(with_range).values["alt_x_uln"] == pytest.approx(2.0)
    assert facts(obs(ALT, 80, "IU/L", 20)).values["alt_x_uln"] == pytest.approx(2.0)


# --- BMI measured vs computed ---------------------------------------------------------------------


def test_measured_bmi_wins_over_computed(facts) -> None:
    result = facts(obs(BMI, 27.0, "kg/m2", 10, rid="bmi"), obs(WEIGHT, 70, "kg", 10), obs(HEIGHT, 170, "cm", 10))
    assert result.values["bmi"] == 27.0
    assert result.bmi_source is not None and result.bmi_source.startswith("measured")


def test_bmi_computed_from_weight_and_height(facts) -> None:
    result = facts(obs(WEIGHT, 154, "[lb_av]", 10), obs(HEIGHT, 67, "[in_i]", 10))
    kg, m = 154 * 0.45359237, 67 * 0.0254
    assert result.values["bmi"] == pytest.approx(kg / m**2, abs=0.01)
    assert result.bmi_source is not None and result.bmi_source.startswith("computed")


def test_stale_measured_bmi_gives_way_to_recent_weight_and_height(facts) -> None:
    result = facts(obs(BMI, 35.0, "kg/m2", 500), obs(WEIGHT, 60, "kg", 10), obs(HEIGHT, 1.6, "m", 10))
    assert result.values["bmi"] == pytest.approx(60 / 1.6**2, abs=0.01)
    assert result.values["bmi_last"] == 35.0  # the stale measurement is still visible as _last


def test_no_bmi_when_weight_is_stale(facts) -> None:
    result = facts(obs(WEIGHT, 60, "kg", 400), obs(HEIGHT, 160, "cm", 400))
    assert result.values["bmi_known"] is False
