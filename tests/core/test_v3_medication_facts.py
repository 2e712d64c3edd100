"""Catalogue v3 medication facts (pathways.md 1, Medications; HIV; physiological replacement; TDD).

Every test runs the real engine over a real Bundle: identity routes (ingredient, product code mapped
through the vendored VSAC expansions, name), ended dosage periods, pump basal rates, the TDD lower
bound, doses in mL, hydrocortisone replacement, HIV by antiretroviral therapy and inactive HIV.
"""

from __future__ import annotations

from typing import Any

import pytest

from cds.valuesets import load_product_index, product_ingredients

from .conftest import (
    BMI,
    ICD10,
    ICD10CM,
    INSULIN_GLARGINE_SCD,
    RXNORM,
    SNOMED,
    WEIGHT,
    cond,
    daily,
    dosage,
    medication,
    medreq,
    medstmt,
    obs,
)

LOCAL = "http://hospital.example.org/fhir/CodeSystem/local-formulary"


def ingredient_only_metformin(rid: str = "local-metformin") -> dict[str, Any]:
    """A Medication known by a local product code only, with metformin as an RxNorm ingredient (route 1)."""
    return {
        "resourceType": "Medication",
        "id": rid,
        "code": {"coding": [{"system": LOCAL, "code": "MF-850-TAB"}]},
        "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "6809"}]}}],
    }


# --- identity ------------------------------------------------------------------------------------------


def test_referenced_medication_with_a_local_code_and_a_metformin_ingredient_is_metformin(facts) -> None:
    med = ingredient_only_metformin()
    result = facts(med, medreq(None, medication_reference="Medication/local-metformin"))
    assert result.values["metformin_active"] is True
    assert "6809" in result.medications["metformin"][0].display or "ingredients" in result.medications["metformin"][0].display


def test_contained_medication_with_ingredient_only_is_metformin(facts) -> None:
    contained = ingredient_only_metformin("m1")
    result = facts(medreq(None, medication_reference="#m1", contained=[contained]))
    assert result.values["metformin_active"] is True


def test_ingredient_by_item_reference_to_another_medication(facts) -> None:
    inner = medication("6809", rid="metformin-ingredient")
    product = {
        "resourceType": "Medication",
        "id": "combo",
        "code": {"coding": [{"system": LOCAL, "code": "LOCAL-COMBO-1"}]},
        "ingredient": [{"itemReference": {"reference": "Medication/metformin-ingredient"}}],
    }
    result = facts(inner, product, medreq(None, medication_reference="Medication/combo"))
    assert result.values["metformin_active"] is True


def test_ingredient_display_by_name_when_no_code_resolves(facts) -> None:
    product = {
        "resourceType": "Medication",
        "id": "named",
        "code": {"coding": [{"system": LOCAL, "code": "X-1"}]},
        "ingredient": [{"itemCodeableConcept": {"text": "Metformin hydrochloride"}}],
    }
    result = facts(product, medreq(None, medication_reference="Medication/named"))
    assert result.values["metformin_active"] is True


def test_a_local_code_without_ingredients_is_not_metformin(facts) -> None:
    """Close miss: the same local product with no ingredient and no name is not recognised."""
    product = {"resourceType": "Medication", "id": "bare", "code": {"coding": [{"system": LOCAL, "code": "MF-850-TAB"}]}}
    result = facts(product, medreq(None, medication_reference="Medication/bare"))
    assert result.values["metformin_active"] is False


def test_product_code_without_display_maps_to_each_ingredient_through_the_expansion(facts) -> None:
    """Route 2: RxNorm 861822 (metformin 850 MG / pioglitazone 15 MG) sent with no display."""
    result = facts(medreq("861822", display=None))
    assert result.values["metformin_active"] is True
    assert result.values["pioglitazone_active"] is True


def test_product_index_is_built_from_the_vendored_expansions() -> None:
    index = load_product_index()
    assert len(index) > 200
    assert index.ingredients("861822") == ("metformin hydrochloride", "pioglitazone")
    assert product_ingredients("3 ML insulin, regular, human 500 UNT/ML Pen Injector [Humulin R]") == (
        "insulin, regular, human", "Humulin R")


@pytest.mark.parametrize(("text", "sets"), [
    ("Metformin 850mg tablets", {"metformin"}),
    ("Janumet 50/1000", {"metformin"}),
    ("Actos 30 mg", {"pioglitazone"}),
    ("Glucovance 5/500", {"metformin", "sulfonylurea"}),
])
def test_name_fallback(facts, text, sets) -> None:
    result = facts(medreq(None, text=text))
    for vs in sets:
        assert result.values[f"{vs.replace('-', '_')}_active"] is True, vs


def test_combination_product_matches_each_ingredient_by_scd(facts) -> None:
    """glyburide / metformin SCD in VSAC 1196.393 (display filter) -> both value sets."""
    result = facts(medreq("861743", display=None))
    assert result.values["metformin_active"] is True
    assert result.values["sulfonylurea_active"] is True


def test_a_cream_is_not_systemic_even_when_its_ingredient_is(facts) -> None:
    product = {
        "resourceType": "Medication",
        "id": "hc-cream",
        "code": {"text": "Hydrocortisone 1% cream"},
        "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "5492"}]}}],
    }
    result = facts(product, medreq(None, medication_reference="Medication/hc-cream"))
    assert result.values["glucocorticoid_systemic_active"] is False


# --- ended dosage periods ---------------------------------------------------------------------------------


def _bounded(dose: float, end: str, start: str = "2025-01-01") -> dict[str, Any]:
    d = daily(dose)
    d["timing"]["repeat"]["boundsPeriod"] = {"start": start, "end": end}
    return d


def test_insulin_whose_every_dosage_period_ended_is_recorded_not_current(facts) -> None:
    result = facts(medreq(INSULIN_GLARGINE_SCD, dosages=[_bounded(220, "2025-06-30")]))
    assert result.values["insulin_active"] is False
    assert result.values["insulin_any"] is True  # still "any insulin product recorded"
    assert result.values["insulin_tdd"] == 0.0
    assert result.medications["insulin"][0].ended is not None


def test_bounds_duration_counts_from_authored_on(facts) -> None:
    d = daily(50)
    d["timing"]["repeat"]["boundsDuration"] = {"value": 30, "unit": "days", "code": "d"}
    result = facts(medreq(INSULIN_GLARGINE_SCD, dosages=[d], days_ago=90))
    assert result.values["insulin_active"] is False


def test_bounds_duration_still_running_counts(facts) -> None:
    d = daily(50)
    d["timing"]["repeat"]["boundsDuration"] = {"value": 90, "unit": "days", "code": "d"}
    result = facts(medreq(INSULIN_GLARGINE_SCD, dosages=[d], days_ago=30))
    assert result.values["insulin_active"] is True
    assert result.values["insulin_tdd"] == 50.0


def test_one_ended_dosage_of_two_is_skipped(facts) -> None:
    result = facts(medreq(INSULIN_GLARGINE_SCD, dosages=[_bounded(100, "2025-06-30"), daily(30)]))
    assert result.values["insulin_active"] is True
    assert result.values["insulin_tdd"] == 30.0


def test_validity_period_and_effective_period_end(facts) -> None:
    request = medreq("861007", dispenseRequest={"validityPeriod": {"start": "2025-01-01", "end": "2025-03-01"}})
    statement = medstmt("317573")
    del statement["effectiveDateTime"]
    statement["effectivePeriod"] = {"start": "2025-01-01", "end": "2025-03-01"}
    result = facts(request, statement)
    assert result.values["metformin_active"] is False
    assert result.values["metformin_any"] is True
    assert result.values["pioglitazone_active"] is False


# --- pump basal rates, lower bound, mL ---------------------------------------------------------------------


def _rate(value: float, unit: str = "U/h", *, hours: float | None = None, start: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"route": {"text": "subcutaneous"}, "doseAndRate": [{"rateQuantity": {"value": value, "unit": unit}}]}
    repeat: dict[str, Any] = {}
    if hours is not None:
        repeat.update(duration=hours, durationUnit="h")
    if start is not None:
        repeat["timeOfDay"] = [start]
    if repeat:
        d["timing"] = {"repeat": repeat}
    return d


def test_single_basal_rate_times_24(facts) -> None:
    result = facts(medreq(None, text="Insulin aspart 100 units/mL via pump", dosages=[_rate(1.5)]))
    assert result.values["insulin_tdd"] == 36.0
    assert result.values["insulin_pump"] is True


def test_basal_segments_add_by_their_hours(facts) -> None:
    dosages = [_rate(1.0, hours=6), _rate(2.0, hours=12), _rate(1.5, hours=6)]
    result = facts(medreq(None, text="Insulin lispro (pump)", dosages=dosages))
    assert result.values["insulin_tdd"] == 6 + 24 + 9


def test_basal_segments_placed_by_start_time(facts) -> None:
    dosages = [_rate(1.0, start="00:00:00"), _rate(2.0, start="06:00:00"), _rate(1.0, start="18:00:00")]
    result = facts(medreq(None, text="Insulin lispro (pump)", dosages=dosages))
    assert result.values["insulin_tdd"] == 6 * 1 + 12 * 2 + 6 * 1


def test_unplaceable_segments_count_as_lowest_rate_times_24(facts) -> None:
    dosages = [_rate(1.2), _rate(2.0)]
    result = facts(medreq(None, text="Insulin lispro (pump)", dosages=dosages))
    assert result.values["insulin_tdd"] == pytest.approx(28.8)


def test_basal_segment_hours_count_only_when_every_segment_has_them(facts) -> None:
    # one segment without a duration: the durations are not used (a known part is not the day), the start times are
    dosages = [_rate(1.0, hours=6, start="00:00:00"), _rate(2.0, start="06:00:00")]
    result = facts(medreq(None, text="Insulin lispro (pump)", dosages=dosages))
    assert result.values["insulin_tdd"] == 6 * 1 + 18 * 2
    # neither every duration nor every start time: lowest rate x 24, never a sum over the known part
    dosages = [_rate(1.0, hours=6), _rate(2.0, start="06:00:00")]
    result = facts(medreq(None, text="Insulin lispro (pump)", dosages=dosages))
    assert result.values["insulin_tdd"] == 24 * 1


def test_basal_plus_bolus_and_rate_ratio(facts) -> None:
    ratio = {"route": {"text": "subcutaneous"},
             "doseAndRate": [{"rateRatio": {"numerator": {"value": 3, "unit": "U"}, "denominator": {"value": 2, "unit": "h"}}}]}
    result = facts(medreq(None, text="Insulin aspart (pump)", dosages=[ratio, dosage(8, timing_code="TID")]))
    assert result.values["insulin_tdd"] == 36 + 24


def test_intravenous_rate_is_not_a_pump(facts) -> None:
    iv = _rate(5.0)
    iv["route"] = {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous"}]}
    result = facts(medreq(None, text="Actrapid infusion", dosages=[iv]))
    assert result.values["insulin_pump"] is False


def test_sliding_scale_next_to_a_known_dose_is_a_lower_bound(facts) -> None:
    sliding = {"text": "sliding scale per protocol", "timing": {"code": {"coding": [{"code": "TID"}]}}}
    result = facts(
        medreq(INSULIN_GLARGINE_SCD, dosages=[daily(200)]),
        medreq(None, text="Insulin lispro 100 units/mL", dosages=[sliding]),
        obs(WEIGHT, 80, "kg", 10),
    )
    values = result.values
    assert values["insulin_tdd_known"] is False  # the complete TDD stays unknown
    assert values["insulin_tdd_at_least"] == 200.0
    assert values["insulin_u_per_kg_at_least"] == 2.5
    assert values["insulin_tdd_unreadable"] is True
    assert "insulin_tdd" in result.unreadable


def test_nothing_quantifiable_is_unknown_not_zero(facts) -> None:
    result = facts(medreq(None, text="Insulin lispro", dosages=[{"text": "as directed"}]))
    assert result.values["insulin_tdd_known"] is False
    assert result.values["insulin_tdd_at_least_known"] is False


def test_complete_tdd_equals_the_lower_bound(facts) -> None:
    result = facts(medreq(INSULIN_GLARGINE_SCD, dosages=[daily(40)]))
    assert result.values["insulin_tdd"] == result.values["insulin_tdd_at_least"] == 40.0
    assert result.values["insulin_tdd_unreadable"] is False


@pytest.mark.parametrize(("text", "ml", "units"), [
    ("Insulin glargine 100 units/mL", 0.5, 50),
    ("Toujeo 300 units/mL SoloStar", 0.2, 60),
    ("Humulin R U-500 KwikPen", 0.4, 200),
    ("insulin degludec U-200 FlexTouch", 0.3, 60),
    ("Awiqli (insulin icodec) 700 units/mL", 0.5, 350),
])
def test_dose_in_ml_of_a_known_concentration(facts, text, ml, units) -> None:
    result = facts(medreq(None, text=text, dosages=[daily(ml, "mL")]))
    assert result.values["insulin_tdd"] == pytest.approx(units)


def test_dose_in_ml_of_an_unknown_concentration_is_unreadable(facts) -> None:
    result = facts(medreq(None, text="Humalog", dosages=[daily(0.2, "mL")]))
    assert result.values["insulin_tdd_known"] is False
    assert result.values["insulin_tdd_unreadable"] is True


def test_u500_dose_in_ml_is_flagged(facts) -> None:
    result = facts(medreq("1731317", dosages=[dosage(0.4, "mL", timing_code="TID")]))
    assert result.values["insulin_u500_dose_in_ml"] is True
    assert result.values["insulin_tdd"] == pytest.approx(600)


def test_pump_device_counts_as_pump_use(facts) -> None:
    device = {"resourceType": "Device", "id": "pump1", "status": "active", "patient": {"reference": "Patient/p1"},
              "deviceName": [{"name": "Omnipod 5 insulin pump", "type": "user-friendly-name"}]}
    result = facts(device, medreq("1731317", dosages=[dosage(100, timing_code="TID")]))
    assert result.values["insulin_pump"] is True
    assert result.values["insulin_u500_pump"] is True


# --- hydrocortisone replacement -----------------------------------------------------------------------------


def test_hydrocortisone_20_mg_a_day_is_replacement(facts) -> None:
    result = facts(medreq(None, text="Hydrocortisone 10 mg tablets", dosages=[dosage(10, "mg", timing_code="BID")]))
    assert result.values["glucocorticoid_systemic_active"] is True
    assert result.values["hydrocortisone_replacement"] is True
    assert result.values["glucocorticoid_systemic_non_replacement"] is False


def test_hydrocortisone_tablets_times_strength(facts) -> None:
    d = dosage(1, "tablet", timing_code="TID")  # 3 x 10 mg = 30 mg/day, still replacement (<= 30)
    result = facts(medreq("197782", display=None, dosages=[d]))
    assert result.values["hydrocortisone_replacement"] is True


def test_hydrocortisone_40_mg_a_day_is_a_glucocorticoid(facts) -> None:
    result = facts(medreq(None, text="Hydrocortisone 20 mg tablets", dosages=[dosage(20, "mg", timing_code="BID")]))
    assert result.values["hydrocortisone_replacement"] is False
    assert result.values["glucocorticoid_systemic_non_replacement"] is True


def test_hydrocortisone_of_unknown_dose_with_addisons_is_replacement(facts) -> None:
    result = facts(medreq(None, text="Hydrocortisone tablets"),
                   cond("E27.1", ICD10, display="Primary adrenocortical insufficiency"))
    assert result.values["hydrocortisone_replacement"] is True
    assert result.values["glucocorticoid_systemic_non_replacement"] is False


def test_hydrocortisone_of_unknown_dose_without_adrenal_insufficiency_counts(facts) -> None:
    result = facts(medreq(None, text="Hydrocortisone tablets"))
    assert result.values["glucocorticoid_systemic_non_replacement"] is True


def test_prednisolone_beside_replacement_still_counts(facts) -> None:
    result = facts(
        medreq(None, text="Hydrocortisone tablets"), cond(None, text="Addison's disease"),
        medreq(None, text="Prednisolone 30 mg tablets"),
    )
    assert result.values["hydrocortisone_replacement"] is True
    assert result.values["glucocorticoid_systemic_non_replacement"] is True


def test_sir_suspected_is_not_suppressed_by_replacement_in_addisons(evaluate) -> None:
    from .conftest import FASTING_INSULIN, bundle
    payload = bundle(
        obs(FASTING_INSULIN, 38, "uIU/mL", 20), obs(BMI, 22.5, "kg/m2", 20),
        medreq(None, text="Hydrocortisone 10 mg tablets", dosages=[dosage(10, "mg", timing_code="BID")]),
        cond(None, text="Addison's disease"),
    )
    assert "sir-suspected" in evaluate(payload).matched


# --- HIV -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "Biktarvy 50/200/25 mg tablets", "Triumeq tablets", "Genvoya", "dolutegravir 50 mg",
    "Kaletra (lopinavir/ritonavir)", "abacavir/lamivudine 600/300",
])
def test_antiretroviral_therapy_implies_hiv(facts, text) -> None:
    result = facts(medreq(None, text=text))
    assert result.values["hiv"] is True
    assert result.values["hiv_active"] is True
    assert result.values["hiv_history"] is True


@pytest.mark.parametrize("text", [
    "Truvada 200/245 mg", "Descovy", "emtricitabine/tenofovir alafenamide", "Apretude (cabotegravir) injection",
    "Sunlenca (lenacapavir)", "lamivudine 100 mg (Zeffix)", "tenofovir disoproxil 245 mg", "entecavir 0.5 mg",
    "Paxlovid (nirmatrelvir/ritonavir)",
])
def test_prep_hepatitis_b_and_covid_drugs_do_not_imply_hiv(facts, text) -> None:
    assert facts(medreq(None, text=text)).values["hiv"] is False


def test_stopped_antiretroviral_does_not_imply_hiv(facts) -> None:
    assert facts(medreq(None, text="Biktarvy", status="stopped")).values["hiv"] is False


@pytest.mark.parametrize("clinical", ["inactive", "remission", "resolved"])
def test_hiv_condition_never_resolves(facts, clinical) -> None:
    result = facts(cond("B20", ICD10CM, clinical=clinical))
    assert result.values["hiv_active"] is True
    assert result.values["hiv"] is True


def test_refuted_hiv_is_no_hiv(facts) -> None:
    assert facts(cond("B20", ICD10CM, verification="refuted")).values["hiv"] is False


def test_lipodystrophy_with_hiv_by_art_is_hiv_associated(facts) -> None:
    result = facts(cond("E88.1", ICD10), medreq(None, text="Triumeq"))
    assert result.values["lipodystrophy_hiv"] is True
    assert result.values["lipodystrophy_active"] is False


def test_partial_lipodystrophy_with_inactive_hiv_is_hiv_associated(facts) -> None:
    result = facts(cond(None, text="Familial partial lipodystrophy"), cond("B20", ICD10CM, clinical="inactive"))
    assert result.values["lipodystrophy_hiv"] is True
    assert result.values["lipodystrophy_partial_active"] is False


# --- oral oestrogen, metreleptin start -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "oral"), [
    ("Microgynon 30 tablets", True), ("Rigevidon", True), ("Yasmin", True), ("Premarin 0.625 mg", True),
    ("ethinylestradiol 30 microgram / levonorgestrel 150 microgram tablets", True),
    ("Estradiol 50 micrograms/24 hours transdermal patch", False), ("Vagifem 10 microgram vaginal tablets", False),
    ("Oestrogel pump-pack gel", False), ("Desogestrel 75 microgram tablets", False),
])
def test_oral_oestrogen(facts, text, oral) -> None:
    assert facts(medreq(None, text=text)).values["oral_oestrogen_active"] is oral


def test_estradiol_with_a_transdermal_route_is_not_oral(facts) -> None:
    d = daily(1, "patch")
    d["route"] = {"coding": [{"system": SNOMED, "code": "45890007", "display": "Transdermal route"}]}
    assert facts(medreq("4083", dosages=[d])).values["oral_oestrogen_active"] is False


def test_metreleptin_start_is_the_earliest_active_record(facts) -> None:
    result = facts(medreq(None, text="Myalept 5 mg", days_ago=40), medstmt(None, text="metreleptin", days_ago=100))
    assert result.values["metreleptin_start_days"] == 100


def test_metreleptin_with_no_start_is_unknown(facts) -> None:
    request = medreq(None, text="Myalept 5 mg")
    del request["authoredOn"]
    assert facts(request).values["metreleptin_start_days_known"] is False




def test_an_unreadable_ingredient_is_named_not_skipped(evaluate) -> None:
    """A Medication whose ingredient concept is malformed is reported (naming it), never silently ignored."""
    from cds._exceptions import InvalidResourceError

    from .conftest import bundle

    product = {"resourceType": "Medication", "id": "broken", "code": {"text": "local product"},
               "ingredient": [{"itemCodeableConcept": {"coding": "6809"}}]}
    with pytest.raises(InvalidResourceError, match="Medication/broken"):
        evaluate(bundle(product, medreq(None, medication_reference="Medication/broken")))
