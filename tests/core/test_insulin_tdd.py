"""Insulin total daily dose (pathways.md section 1, "Insulin total daily dose (TDD)").

TDD = sum over active insulins of dose x administrations/day; TDD unknown is not TDD 0.
"""

from __future__ import annotations

import pytest

from cds.facts.insulin import administrations_per_day

from .conftest import (
    BMI,
    INSULIN_GLARGINE_SCD,
    SNOMED,
    WEIGHT,
    bundle,
    daily,
    dosage,
    medreq,
    medstmt,
    obs,
    patient,
    request,
)


def insulin(*dosages, **kw):
    return medreq(INSULIN_GLARGINE_SCD, dosages=list(dosages), **kw)


def tdd(facts, *resources):
    result = facts(*resources)
    return result.values.get("insulin_tdd"), result


@pytest.mark.parametrize(("kwargs", "per_day"), [
    ({"frequency": 1, "period": 1, "period_unit": "d"}, 1),
    ({"frequency": 2, "period": 1, "period_unit": "d"}, 2),
    ({"frequency": 3, "period": 2, "period_unit": "d"}, 1.5),
    ({"frequency": 1, "period": 8, "period_unit": "h"}, 3),
    ({"frequency": 1, "period": 6, "period_unit": "h"}, 4),
    ({"frequency": 2, "period": 24, "period_unit": "h"}, 2),
    ({"frequency": 3, "period": 1, "period_unit": "wk"}, 3 / 7),
    ({"frequency": 14, "period": 2, "period_unit": "wk"}, 1),
    ({"when_": ["ACM", "ACD", "ACV"]}, 3),
    ({"frequency": 1, "period": 1, "period_unit": "d", "when_": ["ACM", "ACD", "ACV"]}, 3),
    ({"when_": ["HS"]}, 1),
    ({"time_of_day": ["08:00:00", "20:00:00"]}, 2),
    ({"frequency": 1, "period": 1, "period_unit": "d", "time_of_day": ["07:00:00", "12:00:00", "18:00:00"]}, 3),
    ({"timing_code": "QD"}, 1),
    ({"timing_code": "BID"}, 2),
    ({"timing_code": "TID"}, 3),
    ({"timing_code": "QID"}, 4),
    ({"timing_code": "AM"}, 1),
    ({"timing_code": "PM"}, 1),
    ({"timing_code": "Q4H"}, 6),
    ({"timing_code": "Q6H"}, 4),
    ({"timing_code": "Q8H"}, 3),
    ({"timing_code": "Q12H"}, 2),
])
def test_timing_forms(facts, kwargs, per_day) -> None:
    value, result = tdd(facts, insulin(dosage(12, **kwargs)))
    assert value == pytest.approx(round(12 * per_day, 2))
    assert result.insulin.unknown_reasons == []


@pytest.mark.parametrize("unit", ["U", "[iU]", "IU", "units"])
def test_dose_units(facts, unit) -> None:
    assert tdd(facts, insulin(dosage(20, unit, timing_code="BID")))[0] == 40.0


def test_several_dosage_instructions_add_up(facts) -> None:
    value, _ = tdd(facts, insulin(dosage(10, when_=["ACM", "ACD", "ACV"]), dosage(24, when_=["HS"])))
    assert value == 54.0


def test_dose_range_counts_as_its_low_value(facts) -> None:
    assert tdd(facts, insulin(dosage(dose_range=(10, 16), timing_code="BID")))[0] == 20.0


def test_prn_dose_is_excluded(facts) -> None:
    value, _ = tdd(facts, insulin(daily(30), dosage(6, timing_code="TID", prn=True)))
    assert value == 30.0


@pytest.mark.parametrize("route", [
    {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]},
    {"text": "IV"},
    {"text": "intravenous infusion"},
])
def test_intravenous_dose_is_excluded(facts, route) -> None:
    value, _ = tdd(facts, insulin(daily(30), dosage(4, frequency=1, period=1, period_unit="h", route=route)))
    assert value == 30.0


def test_subcutaneous_route_is_counted(facts) -> None:
    route = {"coding": [{"system": SNOMED, "code": "34206005", "display": "Subcutaneous route"}]}
    assert tdd(facts, insulin(dosage(15, timing_code="BID", route=route)))[0] == 30.0


def test_request_and_statement_of_same_product_count_once(facts) -> None:
    value, result = tdd(facts, insulin(daily(40), rid="mr"), medstmt(INSULIN_GLARGINE_SCD, dosages=[daily(40)], rid="ms"))
    assert value == 40.0
    assert any("same product already counted" in item for item in result.insulin.items)


def test_different_products_add_up(facts) -> None:
    lispro = medreq(None, text="Humalog (insulin lispro) 100 units/mL", dosages=[dosage(8, timing_code="TID")])
    assert tdd(facts, insulin(daily(40)), lispro)[0] == 64.0


def test_inactive_insulin_is_not_counted(facts) -> None:
    assert tdd(facts, insulin(daily(40), status="stopped"), medstmt(INSULIN_GLARGINE_SCD, status="completed",
                                                                   dosages=[daily(40)]))[0] == 0.0


@pytest.mark.parametrize("bad", [
    dosage(20),  # no timing at all
    dosage(20, frequency=2),  # a frequency with no period
    dosage(20, timing_code="WEIRD"),
    dosage(20, "mg", timing_code="BID"),  # not insulin units
    dosage(20, "mL", timing_code="BID"),
    dosage(None, timing_code="BID"),  # no dose
])
def test_unreadable_dosage_makes_tdd_unknown_not_zero(facts, bad) -> None:
    other_product = medreq(None, text="Humalog (insulin lispro)", dosages=[bad], rid="unreadable")
    value, result = tdd(facts, insulin(daily(10)), other_product)
    assert value is None
    assert result.values["insulin_tdd_known"] is False
    assert result.values["insulin_u_per_kg_known"] is False
    assert any("MedicationRequest/unreadable" in reason for reason in result.insulin.unknown_reasons)


def test_no_dosage_instructions_is_unknown(facts) -> None:
    value, result = tdd(facts, medreq(INSULIN_GLARGINE_SCD))
    assert value is None
    assert result.insulin.unknown_reasons


def test_u_per_kg_uses_latest_weight(facts) -> None:
    result = facts(insulin(daily(180)), obs(WEIGHT, 90, "kg", 200), obs(WEIGHT, 60, "kg", 10))
    assert result.values["insulin_u_per_kg"] == pytest.approx(3.0)


def test_u_per_kg_with_weight_in_pounds(facts) -> None:
    result = facts(insulin(daily(100)), obs(WEIGHT, 110.2311, "[lb_av]", 10))
    assert result.values["insulin_u_per_kg"] == pytest.approx(2.0, abs=0.001)


def test_u_per_kg_uses_stale_weight_when_it_is_the_latest(facts) -> None:
    result = facts(insulin(daily(100)), obs(WEIGHT, 50, "kg", 500))
    assert result.values["weight_known"] is False
    assert result.values["insulin_u_per_kg"] == pytest.approx(2.0)


def test_drafted_insulin_counts_only_with_drafts(evaluate) -> None:
    draft = medreq(INSULIN_GLARGINE_SCD, status="draft", dosages=[daily(50)])
    result = evaluate(request("order-sign", insulin(daily(100)), drafts=[draft]))
    assert result.facts.values["insulin_tdd"] == 100.0
    assert result.facts.values["insulin_tdd_with_drafts"] == 150.0


def _lean(weight_kg: float, *meds):
    return bundle(obs(BMI, 23, "kg/m2", 10), obs(WEIGHT, weight_kg, "kg", 10), *meds, pt=patient(30, "male"))


def test_over_3_u_per_kg_fires_sir_suspected(evaluate) -> None:
    result = evaluate(_lean(60, insulin(daily(250))))
    assert result.facts.values["insulin_u_per_kg"] > 3
    assert "sir-suspected" in result.matched


def test_unknown_tdd_does_not_fire_the_3_u_per_kg_branch(evaluate) -> None:
    """Same patient, but the frequency of the 250 U dose is not stated: TDD unknown, no card."""
    result = evaluate(_lean(60, insulin(dosage(250))))
    assert result.facts.values["insulin_tdd_known"] is False
    assert "sir-suspected" not in result.matched


def test_known_dose_plus_an_unquantified_one_is_a_lower_bound_that_fires(evaluate) -> None:
    """pathways.md 1 v3: a known 250 U/day plus an unquantified insulin = TDD at least 250 U/day; the lower
    bound decides "> 3 U/kg/day" (250 / 60 kg = 4.2) although the complete TDD stays unknown."""
    other = medreq(None, text="Humalog insulin lispro", dosages=[dosage(10)])
    result = evaluate(_lean(60, insulin(daily(250)), other))
    assert result.facts.values["insulin_tdd_known"] is False
    assert result.facts.values["insulin_tdd_at_least"] == 250.0
    assert result.facts.values["insulin_tdd_unreadable"] is True
    assert "sir-suspected" in result.matched


def test_administrations_per_day_without_timing() -> None:
    assert administrations_per_day(None) is None
    assert administrations_per_day({}) is None
    assert administrations_per_day({"code": {"text": "bid"}}) == 2


def test_two_requests_for_one_product_are_two_doses(facts) -> None:
    """pathways.md 1 de-duplicates a request + statement pair only: two orders are two regimens."""
    value, _ = tdd(facts, insulin(daily(20), rid="mr1"), insulin(daily(10), rid="mr2"))
    assert value == 30.0
