"""Derived facts (pathways.md section 1): deceased, age, children's BMI z-score, pregnancy, hypoglycaemia,
HIV-associated lipodystrophy, NYHA class, anti-insulin-receptor antibodies."""

from __future__ import annotations

import pytest

from .conftest import (
    BMI,
    FASTING_INSULIN,
    GLUCOSE,
    ICD10,
    ICD10CM,
    NYHA,
    SNOMED,
    bundle,
    cond,
    obs,
    patient,
    sir_fires,
    when,
)

# --- deceased ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "deceased"), [
    ({"deceasedBoolean": True}, True),
    ({"deceasedBoolean": False}, False),
    ({"deceasedDateTime": when(30)}, True),
    ({"deceasedDateTime": "2026-11-01T09:00:00Z"}, True),  # at now
    ({"deceasedDateTime": when(-30)}, False),  # after now: alive at the evaluation time
    ({}, False),
])
def test_deceased_patients_get_no_cards(engine, extra, deceased) -> None:
    payload = sir_fires()
    payload["entry"][0]["resource"].update(extra)
    result = engine.evaluate(payload, now="2026-11-01T09:00:00Z")
    assert result.facts.deceased is deceased
    if deceased:
        assert result.cards == [] and result.matched == {}
    else:
        assert "sir-suspected" in result.matched  # control: the same patient alive gets the card


# --- age -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("birth", "years"), [
    ("1990-06-15", 36),
    ("2008-11-01", 18),  # 18th birthday today
    ("2008-11-02", 17),  # 18 tomorrow
    ("1990", 36),  # partial date: 1 January
    ("2024-11-01", 2),
])
def test_age_from_birth_date(facts, birth, years) -> None:
    result = facts(pt=patient(None, birthDate=birth))
    assert int(result.values["age"]) == years
    assert result.values["age"] < years + 1


def test_birth_date_missing_or_after_now_means_age_unknown(facts) -> None:
    assert facts(pt=patient(None)).values["age_known"] is False
    assert facts(pt=patient(None, birthDate="2027-01-01")).values["age_known"] is False


def test_sex_from_gender(facts) -> None:
    assert facts(pt=patient(30, "male")).values["sex"] == "male"
    assert facts(pt=patient(30, "other")).values["sex"] == "other"
    assert facts(pt=patient(30, "nonsense")).values["sex"] == "unknown"


# --- children: BMI-for-age z-score -----------------------------------------------------------------------


def _child(age: float, bmi: float, gender: str = "female", insulin_uiu: float = 40):
    return bundle(obs(FASTING_INSULIN, insulin_uiu, "uIU/mL", 20), obs(BMI, bmi, "kg/m2", 20), pt=patient(age, gender))


def test_child_with_high_bmi_z_is_not_lean_although_bmi_under_30(evaluate) -> None:
    """A 6-year-old girl with BMI 29: z > +3, so sir-suspected must not fire (an adult with BMI 29 is lean)."""
    result = evaluate(_child(6, 29))
    assert result.facts.values["bmi"] == 29
    assert result.facts.values["bmi_z"] > 3
    assert "sir-suspected" not in result.matched
    assert "sir-suspected" in evaluate(_child(40, 29)).matched  # control: adult, same BMI


def test_child_with_normal_bmi_z_can_fire(evaluate) -> None:
    result = evaluate(_child(10, 16))
    assert result.facts.values["bmi_z"] < 1
    assert "sir-suspected" in result.matched


def test_child_is_judged_by_z_not_by_bmi_30(evaluate) -> None:
    """A 10-year-old girl with BMI 32 has z < +3: lean for her age."""
    result = evaluate(_child(10, 32))
    assert result.facts.values["bmi_z"] <= 3
    assert "sir-suspected" in result.matched


def test_no_z_score_for_adults_or_unknown_sex(facts) -> None:
    assert facts(obs(BMI, 22, "kg/m2", 10), pt=patient(30)).values["bmi_z_known"] is False
    result = facts(obs(BMI, 16, "kg/m2", 10), pt=patient(10, "unknown"))
    assert result.values["bmi_z_known"] is False
    assert any("BMI-dependent rules are not evaluated" in n for n in result.notes)


def test_child_without_z_score_is_not_evaluated_by_bmi(evaluate) -> None:
    assert "sir-suspected" not in evaluate(_child(10, 16, gender="unknown")).matched


# --- pregnancy ---------------------------------------------------------------------------------------------


def test_pregnancy_recorded_recently_blocks_sir_suspected(evaluate) -> None:
    payload = sir_fires()
    payload["entry"].append({"resource": cond("77386006", display="Pregnancy", days_ago=60)})
    result = evaluate(payload)
    assert result.facts.values["pregnancy_active"] is True
    assert result.facts.values["pregnancy_active_days"] == 60
    assert "sir-suspected" not in result.matched


def test_pregnancy_older_than_10_months_does_not_count(evaluate) -> None:
    payload = sir_fires()
    payload["entry"].append({"resource": cond("77386006", display="Pregnancy", days_ago=330)})
    result = evaluate(payload)
    assert result.facts.values["pregnancy_active"] is True  # still clinically "active" in the record
    assert "sir-suspected" in result.matched  # but not recorded in the last 10 months


@pytest.mark.parametrize(("code", "system"), [("Z33.1", ICD10CM), ("O24.4", ICD10CM), ("O99.8", ICD10)])
def test_pregnancy_icd_codes(facts, code, system) -> None:
    assert facts(cond(code, system)).values["pregnancy_active"] is True


# --- hypoglycaemia -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "system"), [("302866003", SNOMED), ("E16.2", ICD10CM), ("E16.0", ICD10CM)])
def test_hypoglycaemia_by_code(facts, code, system) -> None:
    assert facts(cond(code, system)).values["hypoglycaemia_active"] is True


def test_low_glucose_excludes_the_insulin_branch_of_sir_suspected(evaluate) -> None:
    """Glucose 45 mg/dL (2.5 mmol/L) in 12 months: possible insulinoma, sir-suspected branch (a) is off."""
    payload = sir_fires()
    payload["entry"].append({"resource": obs(GLUCOSE, 45, "mg/dL", 50)})
    result = evaluate(payload)
    assert result.facts.values["lowest_glucose"] == pytest.approx(2.5)
    assert "sir-suspected" not in result.matched


def test_glucose_of_exactly_3_is_not_low(evaluate) -> None:
    payload = sir_fires()
    payload["entry"].append({"resource": obs(GLUCOSE, 54, "mg/dL", 50)})  # 3.0 mmol/L
    assert "sir-suspected" in evaluate(payload).matched


def test_old_low_glucose_does_not_count(evaluate) -> None:
    payload = sir_fires()
    payload["entry"].append({"resource": obs(GLUCOSE, 2.0, "mmol/L", 400)})
    assert "sir-suspected" in evaluate(payload).matched


# --- lipodystrophy and HIV ------------------------------------------------------------------------------

HIV = ("86406008", SNOMED)


def test_lipodystrophy_is_sir_spectrum(evaluate) -> None:
    payload = sir_fires()
    payload["entry"].append({"resource": cond("E88.1", ICD10, display="Lipodystrophy, not elsewhere classified")})
    result = evaluate(payload)
    assert result.facts.values["lipodystrophy_active"] is True
    assert "sir-suspected" not in result.matched  # already has an SIR-spectrum diagnosis


def test_hiv_lipodystrophy_by_text_is_not_sir_spectrum(evaluate) -> None:
    payload = sir_fires()
    payload["entry"].append({"resource": cond(None, text="HIV-associated lipodystrophy")})
    result = evaluate(payload)
    values = result.facts.values
    assert values["lipodystrophy_hiv"] is True
    assert values["lipodystrophy_active"] is False
    assert "sir-suspected" in result.matched


def test_e88_1_with_active_hiv_is_not_sir_spectrum(facts) -> None:
    result = facts(cond("E88.1", ICD10, display="Lipodystrophy, not elsewhere classified"), cond(*HIV))
    assert result.values["lipodystrophy_hiv"] is True
    assert result.values["lipodystrophy_active"] is False


def test_e88_1_with_refuted_hiv_stays_sir_spectrum(facts) -> None:
    result = facts(cond("E88.1", ICD10), cond(*HIV, verification="refuted"))
    assert result.values["lipodystrophy_hiv"] is False
    assert result.values["lipodystrophy_active"] is True


def test_any_lipodystrophy_with_hiv_is_hiv_associated(facts) -> None:
    """pathways.md 1 v3: 'any lipodystrophy in a patient with HIV as defined above' is HIV-associated and
    not SIR-spectrum in every rule (v2.1 limited this to E88.1; v3 widened it on purpose, change #10)."""
    result = facts(cond("284449005", display="Congenital total lipodystrophy"), cond(*HIV))
    assert result.values["lipodystrophy_hiv"] is True
    assert result.values["lipodystrophy_generalised_active"] is False
    assert result.values["lipodystrophy_active"] is False


def test_partial_lipodystrophy_by_text(facts) -> None:
    result = facts(cond(None, text="Familial partial lipodystrophy (Dunnigan)"))
    assert result.values["lipodystrophy_partial_active"] is True
    assert result.values["lipodystrophy_generalised_active"] is False


# --- NYHA class --------------------------------------------------------------------------------------------


def _nyha(value_code: str | None, days_ago: float = 30, status: str = "final", rid: str | None = None):
    o = obs(NYHA, days_ago=days_ago, status=status, rid=rid)
    if value_code:
        o["valueCodeableConcept"] = {"coding": [{"system": SNOMED, "code": value_code}]}
    return o


@pytest.mark.parametrize(("code", "klass"), [("420300004", 1), ("421704003", 2), ("420913000", 3), ("422293003", 4)])
def test_nyha_class(facts, code, klass) -> None:
    assert facts(_nyha(code)).values["nyha_class"] == klass


def test_latest_nyha_class_wins(facts) -> None:
    assert facts(_nyha("422293003", 100), _nyha("421704003", 10)).values["nyha_class"] == 2


def test_nyha_unusable_status_or_value_is_ignored(facts) -> None:
    assert facts(_nyha("422293003", status="preliminary")).values["nyha_class_known"] is False
    assert facts(_nyha(None)).values["nyha_class_known"] is False


# --- anti-insulin-receptor antibodies ----------------------------------------------------------------------


def _antibody(text: str, *, loinc: str = "99999-9", interpretation: str | None = None,
              value_string: str | None = None, status: str = "final"):
    o = obs(loinc, days_ago=40, text=text, status=status)
    if interpretation:
        o["interpretation"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": interpretation}]}]
    if value_string is not None:
        o["valueString"] = value_string
    return o


@pytest.mark.parametrize(("interpretation", "value", "positive"), [
    ("POS", None, True),
    ("H", None, True),
    ("A", None, True),
    (None, "Positive", True),
    (None, "Detected", True),
    (None, "Not detected", False),
    (None, "Negative", False),
    ("N", None, False),
    ("NEG", "negative", False),
])
def test_receptor_antibody_positivity(facts, interpretation, value, positive) -> None:
    o = _antibody("Anti-insulin receptor antibodies", interpretation=interpretation, value_string=value)
    assert facts(o).values["insulin_receptor_antibody_positive"] is positive


@pytest.mark.parametrize("loinc", ["60463-7", "56546-5"])
def test_insulin_antibodies_never_count(facts, loinc) -> None:
    o = _antibody("Insulin receptor antibody", loinc=loinc, interpretation="POS", value_string="Positive")
    assert facts(o).values["insulin_receptor_antibody_positive"] is False


def test_insulin_antibody_text_is_not_receptor_antibody(facts) -> None:
    o = _antibody("Insulin antibodies", interpretation="POS")
    assert facts(o).values["insulin_receptor_antibody_positive"] is False


def test_preliminary_receptor_antibody_does_not_count(facts) -> None:
    o = _antibody("Insulin receptor antibody", interpretation="POS", status="preliminary")
    assert facts(o).values["insulin_receptor_antibody_positive"] is False

