"""Medication matching (pathways.md section 1, "Medications"): RxNorm ingredient, SCD product, contained
or bundled Medication (by ``Medication/x`` or ``urn:uuid`` fullUrl), or the drug name alone."""

from __future__ import annotations

import pytest

from .conftest import (
    INSULIN_GLARGINE_SCD,
    METFORMIN_INGREDIENT,
    METFORMIN_SCD,
    RXNORM,
    daily,
    medication,
    medreq,
    medstmt,
    patient,
    request,
)


def _bundle_with_fullurls(*pairs):
    """A Bundle whose entries carry explicit fullUrls: pairs of (fullUrl, resource)."""
    entries = [{"fullUrl": "urn:uuid:p1", "resource": patient()}]
    entries += [{"fullUrl": url, "resource": r} for url, r in pairs]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


@pytest.mark.parametrize("code", [METFORMIN_INGREDIENT, METFORMIN_SCD])
def test_rxnorm_ingredient_and_product_codes(facts, code) -> None:
    assert facts(medreq(code)).values["metformin_active"] is True


def test_contained_medication(facts) -> None:
    contained = [medication(METFORMIN_SCD, rid="m1")]
    result = facts(medreq(medication_reference="#m1", contained=contained))
    assert result.values["metformin_active"] is True


def test_contained_reference_to_missing_id_matches_nothing(facts) -> None:
    contained = [medication(METFORMIN_SCD, rid="m1")]
    assert facts(medreq(medication_reference="#other", contained=contained)).values["metformin_any"] is False


def test_bundled_medication_by_type_and_id(facts) -> None:
    med = medication(METFORMIN_SCD, rid="med-x")
    assert facts(med, medreq(medication_reference="Medication/med-x")).values["metformin_active"] is True


def test_bundled_medication_by_urn_uuid_full_url(evaluate) -> None:
    med = medication(METFORMIN_SCD, rid="local-id")
    payload = _bundle_with_fullurls(
        ("urn:uuid:8f1c5d8e-0000-4000-8000-000000000001", med),
        ("urn:uuid:mr", medreq(medication_reference="urn:uuid:8f1c5d8e-0000-4000-8000-000000000001")),
    )
    assert evaluate(payload).facts.values["metformin_active"] is True


def test_medication_statement_with_referenced_medication(facts) -> None:
    med = medication(METFORMIN_INGREDIENT, rid="mx")
    assert facts(med, medstmt(medication_reference="Medication/mx")).values["metformin_active"] is True


def test_medication_in_a_prefetch_bundle(evaluate) -> None:
    med = medication(METFORMIN_SCD, rid="pf-med")
    result = evaluate(request("patient-view", med, medreq(medication_reference="Medication/pf-med")))
    assert result.facts.values["metformin_active"] is True


def test_drafted_order_referencing_a_medication_in_draft_orders(evaluate) -> None:
    med = medication(METFORMIN_SCD, rid="draft-med")
    draft = medreq(medication_reference="Medication/draft-med", status="draft")
    result = evaluate(request("order-select", drafts=[med, draft]))
    assert result.facts.values["metformin_drafted"] is True


@pytest.mark.parametrize("named", [
    {"code": None, "text": "Metformin 850mg tablets"},
    {"code": "99999999", "display": "Metformin 850mg tablets"},  # unknown code, name in display
    {"code": "99999999", "system": "http://example.org/local-drugs", "text": "metformin hydrochloride 850 mg"},
    {"code": None, "text": "Glucophage SR 500mg"},
])
def test_name_only(facts, named) -> None:
    assert facts(medreq(**named)).values["metformin_active"] is True


@pytest.mark.parametrize("named", ["metreleptin 5 mg injection", "Myalept", "Myalepta 11.3 mg"])
def test_metreleptin_by_name(facts, named) -> None:
    assert facts(medreq(None, text=named)).values["metreleptin_active"] is True


def test_unrelated_drug_matches_nothing(facts) -> None:
    values = facts(medreq("29046", display="lisinopril")).values
    assert not any(values[k] for k in ("metformin_any", "insulin_any", "metreleptin_any", "pioglitazone_any"))


def test_name_match_does_not_override_an_explicit_other_code(facts) -> None:
    """A different product code with a metformin-free name is not metformin (control for name matching)."""
    assert facts(medreq("197361", system=RXNORM, display="amlodipine 5 MG Oral Tablet")).values["metformin_any"] is False


def test_contained_insulin_dose_counts_in_tdd(facts) -> None:
    contained = [medication(INSULIN_GLARGINE_SCD, rid="ins")]
    result = facts(medreq(medication_reference="#ins", contained=contained, dosages=[daily(42)]))
    assert result.values["insulin_active"] is True
    assert result.values["insulin_tdd"] == 42.0


def test_prednisone_is_a_systemic_glucocorticoid(facts) -> None:
    assert facts(medreq("8640")).values["glucocorticoid_systemic_active"] is True
