"""GET /cds-services: one service per hook, prefetch templates derived from the loaded rules."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from cds.service.catalog import observation_codes


def test_discovery_lists_one_service_per_hook(service, engine):
    response = service.client.get("/cds-services")
    assert response.status_code == 200
    services = {s["hook"]: s for s in response.json()["services"]}
    assert set(services) == {"patient-view", "order-select", "order-sign"}
    assert {s["id"] for s in services.values()} == {"sir-patient-view", "sir-order-select", "sir-order-sign"}
    for entry in services.values():
        assert set(entry) == {"hook", "title", "description", "id", "prefetch"}
        assert "insulin resistance" in entry["description"]
    # the patient-view description names the rules that run on that hook
    assert "Possible severe insulin resistance" in services["patient-view"]["description"]


def test_prefetch_templates_ask_for_exactly_what_the_rules_read(service, engine):
    prefetch = service.client.get("/cds-services").json()["services"][0]["prefetch"]
    assert prefetch["patient"] == "Patient/{{context.patientId}}"
    for key, rtype in [("conditions", "Condition"), ("medicationRequests", "MedicationRequest"),
                       ("medicationStatements", "MedicationStatement"), ("allergies", "AllergyIntolerance"),
                       ("serviceRequests", "ServiceRequest")]:
        assert prefetch[key].startswith(f"{rtype}?patient={{{{context.patientId}}}}")
    assert "_include=MedicationRequest:medication" in prefetch["medicationRequests"]
    # Observations: by code, every code of the observation value sets and nothing else
    query = parse_qs(urlsplit(prefetch["observations"]).query)
    assert query["patient"] == ["{{context.patientId}}"]
    codes = set(query["code"][0].split(","))
    assert codes == {f"{s}|{c}" for s, c in observation_codes(engine.ruleset)}
    assert "http://loinc.org|27873-9" in codes  # fasting insulin
    assert "http://loinc.org|39156-5" in codes  # BMI
    assert not any("rxnorm" in c for c in codes)  # medication codes never go to Observation search
    for template in prefetch.values():
        assert "{{context.patientId}}" in template


def test_unknown_paths_and_methods_answer_operation_outcomes(service):
    response = service.client.get("/nothing-here")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    response = service.client.delete("/cds-services")
    assert response.status_code == 405
    assert response.json()["issue"][0]["code"] == "not-supported"
