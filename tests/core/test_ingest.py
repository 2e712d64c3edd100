"""Ingest (pathways.md section 1, "Prefetch", "Draft orders"; cds/fhir/ingest.py): requests and Bundles in,
one patient's resources out; bad input fails with a clear InputError, irrelevant junk never fails."""

from __future__ import annotations

import copy

import pytest

from cds._exceptions import InputError, InvalidRequestError, InvalidResourceError
from cds.fhir.ingest import ingest

from .conftest import (
    EGFR,
    METFORMIN_SCD,
    bundle,
    cond,
    medreq,
    obs,
    patient,
    request,
)



def _egfr(value=50, days_ago=10, **kw):
    return obs(EGFR, value, "mL/min/{1.73_m2}", days_ago, **kw)


# --- prefetch read by resourceType ------------------------------------------------------------------------


def test_prefetch_keys_named_oddly(evaluate) -> None:
    payload = request("patient-view", prefetch={
        "zz-whatever": patient(),
        "labs_2": bundle(_egfr(47), with_patient=False, bundle_type="searchset"),
        "0": bundle(medreq(METFORMIN_SCD), with_patient=False, bundle_type="searchset"),
    })
    values = evaluate(payload).facts.values
    assert values["egfr"] == 47.0
    assert values["metformin_active"] is True
    assert values["age_known"] is True


@pytest.mark.parametrize("bundle_type", ["searchset", "collection", "batch-response", "transaction", "history"])
def test_prefetch_bundle_of_any_type(evaluate, bundle_type) -> None:
    payload = request("patient-view", prefetch={
        "p": patient(), "b": bundle(_egfr(41), with_patient=False, bundle_type=bundle_type)})
    assert evaluate(payload).facts.values["egfr"] == 41.0


def test_bundle_nested_in_a_bundle(evaluate) -> None:
    inner = bundle(_egfr(39), with_patient=False, bundle_type="searchset")
    outer = {"resourceType": "Bundle", "type": "batch-response", "entry": [{"resource": inner}]}
    assert evaluate(request("patient-view", prefetch={"p": patient(), "all": outer})).facts.values["egfr"] == 39.0


def test_single_resource_as_prefetch_value(evaluate) -> None:
    payload = request("patient-view", prefetch={"p": patient(), "lastEgfr": _egfr(33)})
    assert evaluate(payload).facts.values["egfr"] == 33.0


def test_operation_outcome_prefetch_is_noted_not_fatal(evaluate) -> None:
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "timeout", "diagnostics": "search timed out"}]}
    payload = request("patient-view", prefetch={"p": patient(), "conditions": outcome,
                                                "labs": bundle(_egfr(44), with_patient=False), "empty": None})
    result = evaluate(payload)
    assert result.facts.values["egfr"] == 44.0
    assert any("prefetch.conditions" in n and "OperationOutcome" in n for n in result.facts.notes)


@pytest.mark.parametrize("value", [[1, 2], "Patient/p1", {"no": "resourceType"}, 5])
def test_prefetch_value_that_is_not_fhir_is_an_input_error(evaluate, value) -> None:
    with pytest.raises(InvalidRequestError, match="prefetch.bad"):
        evaluate(request("patient-view", prefetch={"p": patient(), "bad": value}))


def test_same_resource_under_two_prefetch_keys_counts_once(evaluate) -> None:
    med = medreq(METFORMIN_SCD, rid="dup")
    payload = request("patient-view", prefetch={"p": patient(), "a": bundle(med, with_patient=False),
                                                "b": bundle(copy.deepcopy(med), with_patient=False)})
    result = evaluate(payload)
    assert len(result.facts.medications["metformin"]) == 1


# --- patient boundaries --------------------------------------------------------------------------------------


def test_resources_of_another_patient_are_ignored(evaluate) -> None:
    payload = bundle(_egfr(60, rid="mine"), _egfr(15, days_ago=1, rid="theirs", pid="someone-else"),
                     medreq(METFORMIN_SCD, pid="someone-else"))
    result = evaluate(payload)
    assert result.facts.values["egfr"] == 60.0
    assert result.facts.values["metformin_any"] is False
    assert any("another patient" in n for n in result.facts.notes)


@pytest.mark.parametrize("reference", ["Patient/p1", "urn:uuid:p1", "https://ehr.example.org/fhir/Patient/p1"])
def test_subject_reference_forms_of_the_same_patient(evaluate, reference) -> None:
    o = _egfr(52)
    o["subject"] = {"reference": reference}
    assert evaluate(bundle(o)).facts.values["egfr"] == 52.0


def test_request_patient_id_selects_the_patient(evaluate) -> None:
    payload = request("patient-view", prefetch={
        "everything": bundle(_egfr(61), _egfr(12, pid="p2", days_ago=1), patient(50, pid="p2"), pt=patient(30))})
    result = evaluate(payload)
    assert result.facts.patient_id == "p1"
    assert result.facts.values["egfr"] == 61.0
    assert int(result.facts.values["age"]) == 30


def test_bundle_with_two_patients_and_no_patient_id_is_refused(evaluate) -> None:
    with pytest.raises(InvalidRequestError, match="patients"):
        evaluate(bundle(patient(50, pid="p2")))


# --- hooks and draft orders ---------------------------------------------------------------------------------


def test_bare_bundle_for_order_sign_uses_draft_requests_as_orders(evaluate) -> None:
    payload = bundle(medreq(METFORMIN_SCD, status="draft", rid="d1"), medreq("6809", status="active", rid="a1"))
    result = evaluate(payload, hook="order-sign")
    assert result.facts.hook == "order-sign"
    assert result.facts.values["metformin_drafted"] is True
    assert result.facts.values["metformin_active"] is True
    assert result.facts.draft_ids["metformin"] == ["MedicationRequest/d1"]


def test_bare_bundle_defaults_to_patient_view_without_drafts(evaluate) -> None:
    result = evaluate(bundle(medreq(METFORMIN_SCD, status="draft")))
    assert result.facts.hook == "patient-view"
    assert result.facts.values["metformin_drafted"] is False


@pytest.mark.parametrize("hook", ["patient-view", "order-select", "order-sign"])
def test_request_hook_is_used(evaluate, hook) -> None:
    assert evaluate(request(hook)).facts.values["hook"] == hook


def test_request_hook_mismatch_is_a_clear_error(evaluate) -> None:
    with pytest.raises(InvalidRequestError) as info:
        evaluate(request("patient-view"), hook="order-sign")
    assert "patient-view" in str(info.value) and "order-sign" in str(info.value)
    assert info.value.field == "hook"


def test_unsupported_hook(evaluate) -> None:
    with pytest.raises(InvalidRequestError, match="encounter-start"):
        evaluate(request("encounter-start"))
    with pytest.raises(InvalidRequestError, match="not supported"):
        evaluate(bundle(), hook="appointment-book")


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda r: r.pop("context"), "context"),
    (lambda r: r.__setitem__("context", "Patient/p1"), "context"),
    (lambda r: r.__setitem__("hook", ""), "hook"),
    (lambda r: r["context"].__setitem__("patientId", 7), "context.patientId"),
    (lambda r: r["context"].__setitem__("draftOrders", [{"resourceType": "MedicationRequest"}]), "context.draftOrders"),
    (lambda r: r.__setitem__("prefetch", ["x"]), "prefetch"),
])
def test_malformed_requests_name_the_field(evaluate, mutate, field) -> None:
    payload = request("order-sign")
    mutate(payload)
    with pytest.raises(InvalidRequestError) as info:
        evaluate(payload)
    assert info.value.field == field


@pytest.mark.parametrize("payload", [[], "text", 42, None])
def test_payload_must_be_an_object(payload) -> None:
    with pytest.raises(InputError):
        ingest(payload)


def test_bundle_entry_without_resource_type_is_refused(evaluate) -> None:
    payload = bundle()
    payload["entry"].append({"resource": {"id": "x"}})
    with pytest.raises(InvalidRequestError, match=r"entry\[1\]"):
        evaluate(payload)


# --- FHIR validation: relevant resources only ---------------------------------------------------------------


def test_invalid_relevant_observation_names_resource_and_field(evaluate) -> None:
    bad = _egfr(rid="bad-egfr")
    bad["valueQuantity"]["value"] = "abc"
    with pytest.raises(InvalidResourceError) as info:
        evaluate(bundle(bad))
    assert info.value.resource == "Observation/bad-egfr"
    assert "Observation/bad-egfr" in str(info.value)
    assert "valueQuantity" in (info.value.field or "") and "valueQuantity" in str(info.value)


def test_invalid_relevant_condition_is_refused(evaluate) -> None:
    bad = cond("44054006", rid="bad-dm")
    bad["clinicalStatus"] = "active"  # must be a CodeableConcept
    with pytest.raises(InvalidResourceError, match="Condition/bad-dm"):
        evaluate(bundle(bad))


def test_invalid_relevant_medication_request_is_refused(evaluate) -> None:
    bad = medreq(METFORMIN_SCD, rid="bad-mr")
    bad["authoredOn"] = "yesterday"
    with pytest.raises(InvalidResourceError, match="MedicationRequest/bad-mr"):
        evaluate(bundle(bad))


def test_invalid_patient_is_refused(evaluate) -> None:
    with pytest.raises(InvalidResourceError, match="Patient/p1"):
        evaluate(bundle(pt=patient(None, birthDate="not-a-date")))


def test_invalid_irrelevant_resources_never_fail(evaluate) -> None:
    unknown_code = obs("12345-6", "abc", "mg", 10, rid="junk")  # a code no rule reads, invalid value
    encounter = {"resourceType": "Encounter", "id": "e1", "status": 12, "class": "nonsense"}
    unknown_type = {"resourceType": "NotAFhirType", "id": "x", "whatever": [1, 2]}
    unrelated_condition = cond("38341003", display="Hypertension", rid="htn")
    unrelated_condition["clinicalStatus"] = "active"  # invalid, but not a condition any rule reads
    result = evaluate(bundle(unknown_code, encounter, unknown_type, unrelated_condition, _egfr(58)))
    assert result.facts.values["egfr"] == 58.0


def test_invalid_older_value_behind_a_usable_newer_one_is_not_read(evaluate) -> None:
    """Only the Observations examined are validated (newest first, stopping at the first usable one)."""
    old_bad = _egfr(days_ago=200, rid="old-bad")
    old_bad["valueQuantity"]["value"] = "abc"
    assert evaluate(bundle(old_bad, _egfr(57, days_ago=5))).facts.values["egfr"] == 57.0
