"""Catalogue v3 lab facts (pathways.md 1): three states, comparators as bounds, units, dates, pregnancy
from Observations and the renal-failure equivalent for metformin.

Everything runs through the real engine; every evaluation that involves a bound or an unreadable value
is also checked card by card against the Python explanation (``cds explain`` must never disagree with
durable_rules about a three-state fact).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cds.authoring.explain import explain_evaluation, render_text
from cds.facts.labs import months_before
from cds.rules.conditions import Compare, ConditionParser

from .conftest import (
    ALT,
    EGFR,
    FASTING_INSULIN,
    GLUCOSE,
    HBA1C,
    ICD10,
    ICD10CM,
    LOINC,
    NOW,
    SNOMED,
    agree,
    bound_obs,
    bundle,
    cond,
    medreq,
    obs,
    patient,
    request,
    text_obs,
    when,
)

EGFR_UNIT = "mL/min/{1.73_m2}"


def node(engine, text: str) -> Compare:
    parser = ConditionParser(catalog=engine.ruleset.catalog, valuesets=engine.ruleset.valuesets,
                             thresholds=engine.ruleset.definitions.thresholds)
    parsed = parser.parse(text)
    assert not parser.issues, parser.issues
    assert isinstance(parsed, Compare) and parsed.bounded
    return parsed


def three_state(engine, facts_values: dict[str, Any], text: str) -> str:
    """'true', 'false' or 'unknown' for a comparison, as the compiled condition reads the facts."""
    compare = node(engine, text)
    holds = compare.evaluate(facts_values)[0]
    negated = compare.evaluate_negated(facts_values)[0]
    assert not (holds and negated)
    return "true" if holds else ("false" if negated else "unknown")


# --- units ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("unit", ["µIU/mL", "μU/mL", "mcIU/mL", "microIU/mL", "microU/mL", "uIU/mL", "uU/mL",
                                  "u[IU]/mL", "mU/L", "mIU/L", "m[IU]/L", "MCIU/ML", "micro IU / mL"])
def test_insulin_unit_spellings_all_mean_uiu_per_ml(facts, unit) -> None:
    result = facts(obs(FASTING_INSULIN, 38, unit, 20))
    assert result.values["fasting_insulin"] == pytest.approx(228.0)


def test_insulin_in_iu_per_l_is_unreadable_not_converted(facts) -> None:
    """IU/L is 1000 x uIU/mL: not one of the catalogue's spellings, so it is never compared."""
    result = facts(obs(FASTING_INSULIN, 38, "IU/L", 20, rid="ins-iu"))
    assert result.values["fasting_insulin_known"] is False
    assert result.values["fasting_insulin_unreadable"] is True


# --- comparators and value strings as bounds (pathways.md 1 examples) -----------------------------------

@pytest.mark.parametrize(("written", "threshold", "expected"), [
    (">90", "egfr >= metformin_egfr_start", "true"),
    (">90", "egfr < metformin_egfr_stop", "false"),
    ("<15", "egfr < metformin_egfr_stop", "true"),
    ("<15", "egfr >= metformin_egfr_start", "false"),
    ("<60", "egfr >= metformin_egfr_start", "unknown"),
    ("<60", "egfr < metformin_egfr_stop", "unknown"),
    ("> 90 mL/min/1.73m2", "egfr >= metformin_egfr_start", "true"),
    ("≥45", "egfr >= metformin_egfr_start", "true"),
    (">45", "egfr > 45 mL/min/{1.73_m2}", "true"),
    (">=45", "egfr > 45 mL/min/{1.73_m2}", "unknown"),
    ("<30", "egfr < metformin_egfr_stop", "true"),       # exclusive bound at the threshold decides <
    ("<=30", "egfr < metformin_egfr_stop", "unknown"),   # 30 itself is allowed
    ("<=30", "egfr <= 30 mL/min/{1.73_m2}", "true"),
    ("≤29", "egfr < metformin_egfr_stop", "true"),
    ("25", "egfr < metformin_egfr_stop", "true"),        # a plain numeric string is a value
    ("see report", "egfr < metformin_egfr_stop", "unknown"),
])
def test_egfr_strings_decide_thresholds_or_leave_them_unknown(engine, evaluate, written, threshold, expected) -> None:
    evaluation = evaluate(bundle(text_obs(EGFR, written, 20)))
    assert three_state(engine, evaluation.facts.values, threshold) == expected
    agree(engine, evaluation)


@pytest.mark.parametrize(("comparator", "threshold", "expected"), [
    ("<", "egfr < metformin_egfr_stop", "true"),
    (">", "egfr >= metformin_egfr_start", "true"),
    (">=", "egfr < metformin_egfr_stop", "false"),
    ("<=", "egfr >= metformin_egfr_start", "false"),
])
def test_value_quantity_comparator_is_a_bound(engine, evaluate, comparator, threshold, expected) -> None:
    value = 15 if comparator.startswith("<") else 90
    evaluation = evaluate(bundle(bound_obs(EGFR, comparator, value, EGFR_UNIT, 20)))
    facts = evaluation.facts
    assert facts.values["egfr_known"] is False  # a bound is not a value
    assert facts.values["egfr_recorded"] is True
    assert facts.labs["egfr"].shown == f"{comparator}{value}"
    assert three_state(engine, facts.values, threshold) == expected


def test_insulin_below_5_uiu_fails_insulin_above_150_pmol(engine, evaluate) -> None:
    """pathways.md 1: "<5" uIU/mL (< 30 pmol/L) fails fasting insulin > 150 pmol/L."""
    for payload in (bound_obs(FASTING_INSULIN, "<", 5, "uIU/mL", 20), text_obs(FASTING_INSULIN, "<5 µIU/mL", 20)):
        evaluation = evaluate(bundle(payload))
        assert three_state(engine, evaluation.facts.values, "fasting_insulin > severe_fasting_insulin") == "false"


def test_unitless_insulin_string_is_decided_only_when_every_unit_agrees(engine, evaluate) -> None:
    """Insulin has no report unit: "<5" is < 5 pmol/L or < 30 pmol/L (uIU/mL): both fail > 150."""
    facts = evaluate(bundle(text_obs(FASTING_INSULIN, "<5", 20))).facts
    assert three_state(engine, facts.values, "fasting_insulin > severe_fasting_insulin") == "false"
    facts = evaluate(bundle(text_obs(FASTING_INSULIN, "40", 20))).facts  # 40 pmol/L or 240 pmol/L
    assert three_state(engine, facts.values, "fasting_insulin > severe_fasting_insulin") == "unknown"


@pytest.mark.parametrize(("written", "expected_percent"), [("7.2", 7.2), ("20", 20.0), ("53", 0.0915 * 53 + 2.15)])
def test_unitless_hba1c_is_percent_up_to_20_and_mmol_per_mol_above(facts, written, expected_percent) -> None:
    result = facts(text_obs(HBA1C, written, 20))
    assert result.values["hba1c"] == pytest.approx(expected_percent, abs=1e-4)


def test_plain_mL_min_string_is_not_an_egfr(facts) -> None:
    result = facts(text_obs(EGFR, "<15 mL/min", 20))
    assert result.values["egfr_recorded"] is False
    assert any("is not an eGFR" in i.reason for i in result.ignored)


@pytest.mark.parametrize("written", ["see report", "haemolysed", "eGFR >90", "1,5", "<"])
def test_other_text_is_unreadable_and_named(facts, written) -> None:
    result = facts(text_obs(EGFR, written, 20, rid="odd"))
    assert result.values["egfr_unreadable"] is True
    bad = result.unreadable["egfr"]
    assert bad.raw == written and bad.resource == "Observation/odd"
    assert str(bad) == f"eGFR of {when(20)[:10]} could not be read ('{written}')"


def test_coded_value_for_a_numeric_lab_is_unreadable(facts) -> None:
    o = obs(ALT, None, None, 10)
    o["valueCodeableConcept"] = {"text": "Haemolysed sample"}
    result = facts(o)
    assert result.values["alt_unreadable"] is True and result.values["alt_x_uln_unreadable"] is True
    assert "Haemolysed sample" in str(result.unreadable["alt"])


def test_data_absent_reason_is_absent_with_the_reason_shown(facts) -> None:
    o = obs(EGFR, None, None, 10, rid="dar")
    o["dataAbsentReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                         "code": "not-performed", "display": "Not Performed"}]}
    result = facts(o)
    assert result.values["egfr_recorded"] is False and result.values["egfr_unreadable"] is False
    assert any(i.resource == "Observation/dar" and "Not Performed" in i.reason for i in result.ignored)


def test_readable_value_newer_than_the_unreadable_one_wins(facts) -> None:
    result = facts(text_obs(EGFR, "see report", 60), obs(EGFR, 50, EGFR_UNIT, 10))
    assert result.values["egfr"] == 50 and result.values["egfr_unreadable"] is False


def test_unreadable_newest_value_hides_the_older_readable_one(facts) -> None:
    result = facts(text_obs(EGFR, "see report", 10), obs(EGFR, 50, EGFR_UNIT, 60, rid="older"))
    assert result.values["egfr_known"] is False and result.values["egfr_unreadable"] is True
    assert result.last_labs["egfr"].resource == "Observation/older"  # shown, never used as current


def test_unreadable_value_outside_the_look_back_is_stale_like_any_other(facts) -> None:
    result = facts(text_obs(EGFR, "see report", 400))
    assert result.values["egfr_recorded"] is False and result.values["egfr_unreadable"] is False


def test_explain_names_the_unreadable_value(engine, evaluate) -> None:
    o = text_obs(EGFR, "see report", 0, rid="egfr-x")
    o["effectiveDateTime"] = "2026-10-01T08:00:00Z"
    evaluation = evaluate(request("order-sign", o, drafts=[medreq(status="draft", rid="draft-met")]))
    text = render_text(explain_evaluation(engine, evaluation))
    assert "eGFR of 2026-10-01 could not be read ('see report')" in text
    assert "could not be read (a record exists; never reported as missing)" in text


# --- dates ---------------------------------------------------------------------------------------------

def test_issued_is_the_date_when_there_is_no_effective_time(facts) -> None:
    o = obs(EGFR, 52, EGFR_UNIT)
    del o["effectiveDateTime"]
    o["issued"] = "2026-08-01T12:00:00Z"
    result = facts(o)
    assert result.labs["egfr"].date == datetime(2026, 8, 1, 12, tzinfo=UTC)


def test_effective_date_wins_over_issued(facts) -> None:
    o = obs(EGFR, 52, EGFR_UNIT, 400)  # effective 400 days ago: stale
    o["issued"] = when(10)
    assert facts(o).values["egfr_known"] is False


def test_future_dated_result_is_ignored_and_said(facts) -> None:
    result = facts(obs(EGFR, 20, EGFR_UNIT, -3, rid="future"), obs(EGFR, 60, EGFR_UNIT, 30))
    assert result.values["egfr"] == 60
    assert any(i.resource == "Observation/future" and "future-dated" in i.reason for i in result.ignored)


def test_same_date_egfrs_use_the_lowest(facts) -> None:
    """Race-specific pairs: the most conservative (lowest) of the latest date's values."""
    a = obs(EGFR, 35, EGFR_UNIT, rid="af-am")
    b = obs(EGFR, 28, EGFR_UNIT, rid="non-af-am")
    a["effectiveDateTime"] = "2026-10-01T10:00:00Z"
    b["effectiveDateTime"] = "2026-10-01T08:00:00Z"  # earlier the same day: still the same date
    result = facts(a, b)
    assert result.values["egfr"] == 28 and result.labs["egfr"].resource == "Observation/non-af-am"


def test_same_date_value_and_bound_combine_conservatively(engine, evaluate) -> None:
    a = obs(EGFR, 40, EGFR_UNIT, 10)
    b = text_obs(EGFR, ">90", 10)
    facts = evaluate(bundle(a, b)).facts
    assert three_state(engine, facts.values, "egfr < metformin_egfr_start") == "true"


def test_other_labs_on_the_same_date_take_the_latest_instant(facts) -> None:
    a, b = obs(HBA1C, 6.0, "%"), obs(HBA1C, 7.0, "%")
    a["effectiveDateTime"], b["effectiveDateTime"] = "2026-10-01T08:00:00Z", "2026-10-01T10:00:00Z"
    assert facts(a, b).values["hba1c"] == 7.0


@pytest.mark.parametrize(("now", "inside", "outside"), [
    ("2026-12-02T09:00:00Z", "2025-12-02T00:00:00Z", "2025-12-01T23:59:00Z"),
    ("2025-02-28T09:00:00Z", "2024-02-28T00:00:00Z", "2024-02-27T12:00:00Z"),
    ("2024-02-29T09:00:00Z", "2023-02-28T00:00:00Z", "2023-02-27T12:00:00Z"),  # leap day: clamped
    ("2026-03-31T09:00:00Z", "2025-03-31T00:00:00Z", "2025-03-30T12:00:00Z"),
])
def test_look_back_boundary_is_inclusive_by_calendar_date(engine, now, inside, outside) -> None:
    for date, recent in ((inside, True), (outside, False)):
        o = obs(EGFR, 50, EGFR_UNIT)
        o["effectiveDateTime"] = date
        facts = engine.evaluate(bundle(o), now=now).facts
        assert facts.values["egfr_known"] is recent, (now, date)
        assert facts.values["egfr_last_known"] is True


def test_months_before_clamps_to_month_end() -> None:
    assert months_before(datetime(2026, 3, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert months_before(datetime(2024, 2, 29, tzinfo=UTC), 12) == datetime(2023, 2, 28, tzinfo=UTC)


# --- min aggregate (lowest glucose) with an unreadable value -------------------------------------------

def test_unreadable_glucose_leaves_the_lowest_an_upper_bound(engine, evaluate) -> None:
    facts = evaluate(bundle(obs(GLUCOSE, 5.0, "mmol/L", 20), text_obs(GLUCOSE, "hemolyzed", 10))).facts
    assert three_state(engine, facts.values, "lowest_glucose < hypoglycaemia_glucose") == "unknown"
    facts = evaluate(bundle(obs(GLUCOSE, 2.5, "mmol/L", 20), text_obs(GLUCOSE, "hemolyzed", 10))).facts
    assert three_state(engine, facts.values, "lowest_glucose < hypoglycaemia_glucose") == "true"


# --- pregnancy from Observations ------------------------------------------------------------------------

def status_obs(code: str, system: str = LOINC, days_ago: float = 30, **kw: Any) -> dict[str, Any]:
    o = obs("82810-3", None, None, days_ago, **kw)
    o["valueCodeableConcept"] = {"coding": [{"system": system, "code": code}]}
    return o


def hcg(value: Any, days_ago: float = 14, loinc: str = "2106-3", **kw: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return text_obs(loinc, value, days_ago, **kw)
    return obs(loinc, value, "[IU]/L", days_ago, **kw)


def pregnant(evaluate, *resources) -> bool:
    evaluation = evaluate(bundle(*resources))
    return evaluation.facts.definitions.get("def_pregnant", False)


@pytest.mark.parametrize(("resource", "expected"), [
    (status_obs("LA15173-0"), True),
    (status_obs("77386006", SNOMED), True),
    (status_obs("LA26683-5"), False),
    (status_obs("LA4489-6"), False),                 # unknown: no evidence either way
    (status_obs("LA15173-0", days_ago=320), False),  # older than 10 months
    (hcg("positive"), True),
    (hcg("Detected", loinc="2118-8"), True),
    (hcg("negative"), False),
    (hcg(1200.0, loinc="21198-7"), True),           # quantitative >= 25 IU/L
    (hcg(25.0, loinc="21198-7"), True),
    (hcg(24.0, loinc="21198-7"), False),
    (hcg("positive", days_ago=90), False),           # older than 12 weeks
])
def test_pregnancy_from_observations(evaluate, resource, expected) -> None:
    assert pregnant(evaluate, resource) is expected


def test_positive_hcg_by_interpretation(evaluate) -> None:
    o = hcg("see comment")
    o["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                        "code": "POS"}]}]
    assert pregnant(evaluate, o) is True


def test_later_negative_hcg_or_not_pregnant_status_cancels_a_positive_hcg(evaluate) -> None:
    assert pregnant(evaluate, hcg("positive", 40), hcg("negative", 10)) is False
    assert pregnant(evaluate, hcg("positive", 40), status_obs("LA26683-5", days_ago=10)) is False
    assert pregnant(evaluate, hcg("negative", 40), hcg("positive", 10)) is True


def test_latest_status_decides(evaluate) -> None:
    assert pregnant(evaluate, status_obs("LA15173-0", days_ago=200), status_obs("LA26683-5", days_ago=20)) is False
    assert pregnant(evaluate, status_obs("LA26683-5", days_ago=200), status_obs("LA15173-0", days_ago=20)) is True


def test_unreadable_hcg_is_flagged_not_pregnant_by_itself(evaluate) -> None:
    facts = evaluate(bundle(hcg("see comment"))).facts
    assert facts.values["pregnancy_observation"] is False
    assert facts.values["pregnancy_observation_unreadable"] is True
    assert "hCG of" in str(facts.unreadable["pregnancy_observation"])


def test_pregnancy_condition_still_counts(evaluate) -> None:
    assert pregnant(evaluate, cond("77386006", days_ago=30)) is True


# --- renal-failure equivalent ---------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "system", "text"), [
    ("N18.4", ICD10CM, None), ("N18.5", ICD10CM, None), ("N18.6", ICD10CM, None), ("I12.0", ICD10CM, None),
    ("I13.11", ICD10CM, None), ("I13.2", ICD10CM, None), ("Z99.2", ICD10CM, None), ("Z49.01", ICD10CM, None),
    ("431857002", SNOMED, None), ("433146000", SNOMED, None), ("46177005", SNOMED, None),
    (None, SNOMED, "End stage kidney disease on dialysis"),
])
def test_renal_failure_equivalent_codes(evaluate, code, system, text) -> None:
    facts = evaluate(bundle(cond(code, system, text=text))).facts
    assert facts.definitions["def_metformin_renal_equivalent"] is True
    assert facts.definitions["def_metformin_renal_equivalent_verified"] is True


def test_who_icd10_ckd5_is_an_unverified_equivalent(evaluate) -> None:
    facts = evaluate(bundle(cond("N18.5", ICD10))).facts
    assert facts.definitions["def_metformin_renal_equivalent"] is True
    assert facts.definitions["def_metformin_renal_equivalent_verified"] is False


@pytest.mark.parametrize(("code", "system"), [("N18.32", ICD10CM), ("N18.9", ICD10CM), ("I12.9", ICD10CM)])
def test_lesser_ckd_is_not_an_equivalent(evaluate, code, system) -> None:
    assert evaluate(bundle(cond(code, system))).facts.definitions["def_metformin_renal_equivalent"] is False


def test_recent_deciding_egfr_wins_over_the_equivalent(evaluate) -> None:
    ckd5 = cond("N18.5", ICD10CM)
    assert evaluate(bundle(ckd5, obs(EGFR, 60, EGFR_UNIT, 20))).facts.definitions["def_metformin_renal_equivalent"] is False
    assert evaluate(bundle(ckd5, text_obs(EGFR, "<60", 20))).facts.definitions["def_metformin_renal_equivalent"] is True
    assert evaluate(bundle(ckd5, obs(EGFR, 60, EGFR_UNIT, 400))).facts.definitions["def_metformin_renal_equivalent"] is True


def test_now_is_the_fixture_time() -> None:
    assert NOW.startswith("2026-11-01")
    assert patient(40)["gender"] == "female"
