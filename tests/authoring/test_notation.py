"""The compact notation produces valid FHIR R4 resources with the meaning written on the line."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds.authoring.notation import NotationError, expand_mapping, parse_item, resolve_date
from cds.fhir.validation import validate_resource

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _valid(resource: dict) -> dict:
    resource = {**resource, "id": "x"}
    key = "patient" if resource["resourceType"] == "AllergyIntolerance" else "subject"
    if resource["resourceType"] != "SupplyRequest":  # R4 SupplyRequest has no subject
        resource[key] = {"reference": "Patient/p"}
    validate_resource(resource)
    return resource


def test_loinc_line_is_a_final_observation_with_quantity_and_relative_date() -> None:
    item = parse_item("LOINC#27873-9 38 uIU/mL 3 months ago", NOW)
    r = _valid(item.resource)
    assert r["resourceType"] == "Observation" and r["status"] == "final"
    assert r["code"]["coding"] == [{"system": "http://loinc.org", "code": "27873-9"}]
    assert r["valueQuantity"] == {"value": 38, "unit": "uIU/mL", "system": "http://unitsofmeasure.org", "code": "uIU/mL"}
    assert r["effectiveDateTime"] == "2026-08-01T09:00:00Z"


def test_observation_without_date_is_dated_now() -> None:
    assert parse_item("LOINC#4548-4 7.2 %", NOW).resource["effectiveDateTime"] == "2026-11-01T09:00:00Z"


def test_snomed_is_an_active_condition_and_icd_takes_statuses_and_dates() -> None:
    active = _valid(parse_item("SNOMED#763325000", NOW).resource)
    assert active["resourceType"] == "Condition"
    assert active["clinicalStatus"]["coding"][0]["code"] == "active"
    assert "recordedDate" not in active
    resolved = _valid(parse_item('ICD10CM#E11.9 "Type 2 diabetes" resolved refuted 2 years ago', NOW).resource)
    assert resolved["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert resolved["verificationStatus"]["coding"][0]["code"] == "refuted"
    assert resolved["code"]["coding"][0]["display"] == "Type 2 diabetes"
    assert resolved["recordedDate"] == "2024-11-01T09:00:00Z"


def test_rxnorm_is_a_medication_request_and_draft_marks_an_order() -> None:
    active = parse_item("RXNORM#861007 active", NOW)
    assert _valid(active.resource)["resourceType"] == "MedicationRequest"
    assert active.resource["status"] == "active" and active.resource["intent"] == "order"
    assert not active.drafted
    draft = parse_item("RXNORM#861007 draft", NOW)
    assert draft.drafted and draft.resource["status"] == "draft"


@pytest.mark.parametrize(
    ("line", "rtype", "concept_field"),
    [
        ('statement "Metformin 850mg tablets" active', "MedicationStatement", "medicationCodeableConcept"),
        ("allergy RXNORM#6809", "AllergyIntolerance", "code"),
        ("referral SNOMED#306278007 completed 1 year ago", "ServiceRequest", "code"),
        ('device "U-500 insulin syringe" draft', "DeviceRequest", "codeCodeableConcept"),
        ('supply "U-500 syringe" active', "SupplyRequest", "itemCodeableConcept"),
        ('medication "Metformin 850mg tablets" active', "MedicationRequest", "medicationCodeableConcept"),
    ],
)
def test_explicit_types_build_valid_resources(line: str, rtype: str, concept_field: str) -> None:
    r = _valid(parse_item(line, NOW).resource)
    assert r["resourceType"] == rtype
    assert r[concept_field]


def test_name_only_concept_has_text_and_no_coding() -> None:
    r = parse_item('medication "Metformin 850mg tablets" active', NOW).resource
    assert r["medicationCodeableConcept"] == {"text": "Metformin 850mg tablets"}


def test_dose_builds_dosage_instructions() -> None:
    r = _valid(parse_item("RXNORM#1731315 active dose 100 U TID dose 20 U 2/d prn", NOW).resource)
    first, second = r["dosageInstruction"]
    assert first["doseAndRate"][0]["doseQuantity"]["value"] == 100
    assert first["timing"]["code"]["coding"][0]["code"] == "TID"
    assert second["timing"]["repeat"] == {"frequency": 2, "period": 1, "periodUnit": "d"}
    assert second["asNeededBoolean"] is True


def test_observation_values_codes_text_reference_range_and_interpretation() -> None:
    nyha = _valid(parse_item("LOINC#88020-3 = SNOMED#420913000 1 month ago", NOW).resource)
    assert nyha["valueCodeableConcept"]["coding"][0]["code"] == "420913000"
    antibody = _valid(parse_item('observation "Insulin receptor antibody" = positive interpretation POS', NOW).resource)
    assert antibody["valueString"] == "positive"
    assert antibody["interpretation"][0]["coding"][0]["code"] == "POS"
    alt = _valid(parse_item("LOINC#1742-6 120 U/L ref-high 35 id alt-1", NOW).resource)
    assert alt["referenceRange"][0]["high"]["value"] == 35 and alt["id"] == "x"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("FOO#123", "unknown code system 'FOO'"),
        ("LOINC#27873-9 Insulin 38 uIU/mL", "put a display in quotes"),
        ('"Metformin"', "needs its type first"),
        ("SNOMED#1 flying", "Condition statuses are"),
        ("RXNORM#861007 active dose 100 U", "needs a timing"),
        ("LOINC#1 1 mg yesterday today", "two dates"),
        ("RXNORM#861007 draft active", "two status words"),
    ],
)
def test_errors_say_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(NotationError, match=message):
        parse_item(line, NOW)


def test_relative_dates() -> None:
    end_of_march = datetime(2026, 3, 31, 12, tzinfo=UTC)
    assert resolve_date("1 month ago", end_of_march) == "2026-02-28T12:00:00Z"
    assert resolve_date("2 years ago", NOW) == "2024-11-01T09:00:00Z"
    assert resolve_date("10 days ago", NOW) == "2026-10-22T09:00:00Z"
    assert resolve_date("in 2 weeks", NOW) == "2026-11-15T09:00:00Z"
    assert resolve_date("today", NOW) == "2026-11-01T09:00:00Z"
    assert resolve_date("2025-01-31", NOW) == "2025-01-31"
    with pytest.raises(NotationError, match="cannot read date"):
        resolve_date("last tuesday", NOW)


def test_mapping_form_expands_shorthand() -> None:
    r = expand_mapping({"resourceType": "Observation", "status": "preliminary", "code": "LOINC#27873-9 Insulin fasting",
                        "valueQuantity": "38 uIU/mL", "effectiveDateTime": "2 months ago"}, NOW)
    assert r["code"] == {"coding": [{"system": "http://loinc.org", "code": "27873-9", "display": "Insulin fasting"}]}
    assert r["valueQuantity"]["value"] == 38
    assert r["effectiveDateTime"] == "2026-09-01T09:00:00Z"
    _valid(r)
