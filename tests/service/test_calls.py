"""POST /cds-services/{id}: each hook with full prefetch, the FHIR fallback, and every error status."""

from __future__ import annotations

import json

import pytest

from cds.service.prefetch import FETCH_FAILED

from svc_support import (
    RXNORM,
    comparable,
    draft_medication_request,
    full_prefetch,
    hook_request,
    patient_resources,
)

SERVICES = {"patient-view": "sir-patient-view", "order-select": "sir-order-select", "order-sign": "sir-order-sign"}


def templates(service) -> dict[str, str]:
    return service.state.holder.current().catalog["sir-patient-view"].prefetch


def drafts(engine, pid: str) -> list[dict]:
    metformin = engine.ruleset.valuesets["metformin"].codes_for(RXNORM)[0]
    return [draft_medication_request(pid, metformin)]


def test_patient_view_with_full_prefetch_returns_the_sir_suspected_card(service, engine):
    body = hook_request("patient-view", "p1", prefetch=full_prefetch(templates(service), patient_resources("p1")))
    response = service.client.post("/cds-services/sir-patient-view", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["sir-suspected"]
    card = cards[0]
    assert card["indicator"] == "warning"
    assert "240 pmol/L" in card["summary"] and "BMI 22" in card["summary"]
    assert card["uuid"]
    assert card["source"]["topic"]["version"] == engine.ruleset.rule("sir-suspected").spec.version
    assert "systemActions" not in response.json()  # omitted when empty (no empty arrays in CDS Hooks)


def test_patient_view_below_threshold_returns_no_cards(service):
    body = hook_request("patient-view", "p2",
                        prefetch=full_prefetch(templates(service), patient_resources("p2", insulin=10)))
    response = service.client.post("/cds-services/sir-patient-view", json=body)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


@pytest.mark.parametrize("hook", ["patient-view", "order-select", "order-sign"])
def test_each_hook_answers_what_the_engine_answers(service, engine, hook):
    """Every hook with full prefetch: the HTTP cards equal a direct engine run on the same request."""
    pid = f"h-{hook}"
    body = hook_request(hook, pid, prefetch=full_prefetch(templates(service), patient_resources(pid)),
                        drafts=drafts(engine, pid))
    response = service.client.post(f"/cds-services/{SERVICES[hook]}", json=body)
    assert response.status_code == 200, response.text
    direct = engine.evaluate(body, hook=hook).response.to_json()
    cards = response.json()["cards"]
    assert comparable(cards) == comparable(direct["cards"])
    # this patient (high insulin, no eGFR) with a draft metformin order gets cards on every hook,
    # each from a rule the discovery document lists for that hook
    assert cards
    rule_ids = service.state.holder.current().catalog[SERVICES[hook]].rule_ids
    assert {c["source"]["topic"]["code"] for c in cards} <= set(rule_ids)


def test_no_prefetch_is_fetched_from_the_fhir_server_with_the_bearer_token(service, fhir):
    base, store = fhir
    store.add_patient("p3", patient_resources("p3", extra_observations=5))  # 7 observations: 4 pages of 2
    with_prefetch = service.client.post(
        "/cds-services/sir-patient-view",
        json=hook_request("patient-view", "p3",
                          prefetch=full_prefetch(templates(service), patient_resources("p3", extra_observations=5))))
    body = hook_request("patient-view", "p3", fhir_server=base, token="tok-123-secret")
    response = service.client.post("/cds-services/sir-patient-view", json=body)
    assert response.status_code == 200, response.text
    assert comparable(response.json()["cards"]) == comparable(with_prefetch.json()["cards"])
    assert [c["source"]["topic"]["code"] for c in response.json()["cards"]] == ["sir-suspected"]
    # every template was fetched, each with the token; the Observation search was paged to the end
    paths = [r["path"] for r in store.requests]
    assert "/fhir/Patient/p3" in paths
    assert {p.rsplit("/", 1)[-1] for p in paths} >= {"Observation", "Condition", "MedicationRequest",
                                                     "MedicationStatement", "AllergyIntolerance", "ServiceRequest"}
    assert all(r["authorization"] == "Bearer tok-123-secret" for r in store.requests)
    observation_pages = [r for r in store.requests if r["path"].endswith("/Observation")]
    assert len(observation_pages) == 4
    assert "code=http" in observation_pages[0]["query"] and "patient=p3" in observation_pages[0]["query"]


def test_partial_prefetch_fetches_only_the_missing_and_failed_keys(service, fhir):
    base, store = fhir
    store.add_patient("p4", patient_resources("p4"))
    prefetch = full_prefetch(templates(service), patient_resources("p4"))
    del prefetch["observations"]  # missing
    prefetch["conditions"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    response = service.client.post("/cds-services/sir-patient-view",
                                   json=hook_request("patient-view", "p4", prefetch=prefetch, fhir_server=base))
    assert response.status_code == 200, response.text
    assert response.json()["cards"][0]["source"]["topic"]["code"] == "sir-suspected"
    fetched = sorted(r["path"].rsplit("/", 1)[-1] for r in store.requests)
    assert fetched == ["Condition", "Observation"]
    assert all(r["authorization"] is None for r in store.requests)  # no fhirAuthorization: no header


def test_a_paginated_prefetch_is_completed_from_the_server(service, fhir):
    base, store = fhir
    store.add_patient("p5", {"Observation": patient_resources("p5")["Observation"]})
    prefetch = full_prefetch(templates(service), {"Patient": patient_resources("p5")["Patient"]})
    # the EHR sent only the first page of Observations, with a next link to its server
    prefetch["observations"] = {"resourceType": "Bundle", "type": "searchset", "entry": [],
                                "link": [{"relation": "next", "url": f"{base}/Observation?patient=p5&_page=1"}]}
    response = service.client.post("/cds-services/sir-patient-view",
                                   json=hook_request("patient-view", "p5", prefetch=prefetch, fhir_server=base,
                                                     token="page-token"))
    assert response.status_code == 200, response.text
    assert [c["source"]["topic"]["code"] for c in response.json()["cards"]] == ["sir-suspected"]
    assert [r["authorization"] for r in store.requests] == ["Bearer page-token"]


def test_null_prefetch_without_server_means_no_data(service):
    prefetch = dict.fromkeys(templates(service))
    response = service.client.post("/cds-services/sir-patient-view",
                                   json=hook_request("patient-view", "p6", prefetch=prefetch))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


# -- 412 --------------------------------------------------------------------------------------------

def outcome(response) -> dict:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


def test_412_without_prefetch_or_fhir_server(service):
    response = service.client.post("/cds-services/sir-patient-view", json=hook_request("patient-view", "p7"))
    assert response.status_code == 412
    issue = outcome(response)
    assert issue["code"] == "incomplete"
    assert issue["expression"][0].startswith("prefetch.")


def test_412_when_a_key_is_missing_and_there_is_no_server(service):
    prefetch = full_prefetch(templates(service), patient_resources("p8"))
    del prefetch["conditions"]
    response = service.client.post("/cds-services/sir-patient-view",
                                   json=hook_request("patient-view", "p8", prefetch=prefetch))
    assert response.status_code == 412
    assert outcome(response)["expression"] == ["prefetch.conditions"]


def test_412_when_the_fhir_server_is_unreachable(service, unused_port, caplog):
    response = service.client.post(
        "/cds-services/sir-patient-view",
        json=hook_request("patient-view", "p9", fhir_server=f"http://127.0.0.1:{unused_port}/fhir", token="t"))
    assert response.status_code == 412
    # one text for every fetch failure (no port scanning through the service); the reason is logged
    assert outcome(response)["diagnostics"] == FETCH_FAILED
    assert "unreachable" in caplog.text


def test_412_when_the_fhir_server_fails(service, fhir):
    base, store = fhir
    store.add_patient("p10", patient_resources("p10"))
    store.fail_types.add("Condition")
    response = service.client.post("/cds-services/sir-patient-view",
                                   json=hook_request("patient-view", "p10", fhir_server=base))
    assert response.status_code == 412
    issue = outcome(response)
    assert issue["expression"] == ["prefetch.conditions"]
    assert issue["diagnostics"] == FETCH_FAILED


def test_a_plain_http_fhir_server_off_loopback_gets_no_token(service):
    response = service.client.post(
        "/cds-services/sir-patient-view",
        json=hook_request("patient-view", "p11", fhir_server="http://ehr.example.org/fhir", token="t"))
    assert response.status_code == 412
    assert outcome(response)["diagnostics"] == FETCH_FAILED


# -- 400 / 404 --------------------------------------------------------------------------------------

def post_raw(service, content: bytes | str, path: str = "/cds-services/sir-patient-view"):
    return service.client.post(path, content=content, headers={"content-type": "application/json"})


def test_400_malformed_json(service):
    response = post_raw(service, b'{"hook": "patient-view", ')
    assert response.status_code == 400
    assert "not JSON" in outcome(response)["diagnostics"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["context"].pop("patientId"), "context.patientId"),
        (lambda b: b["context"].update(userId="nobody"), "context.userId"),
        (lambda b: b.update(hookInstance="not-a-uuid"), "hookInstance"),
        (lambda b: b.update(hook="order-sign"), "hook"),
        (lambda b: b.pop("context"), "context"),
        (lambda b: b.update(prefetch={"patient": [1, 2]}), "prefetch.patient"),
        (lambda b: b.update(fhirAuthorization={"access_token": "x", "token_type": "Bearer", "expires_in": 1,
                                                "scope": "s", "subject": "s"}), "fhirServer"),
        (lambda b: b.update(fhirServer="ftp://x", ), "fhirServer"),
    ],
)
def test_400_names_the_field(service, mutate, field):
    body = hook_request("patient-view", "p12", prefetch=full_prefetch(templates(service), patient_resources("p12")))
    mutate(body)
    response = service.client.post("/cds-services/sir-patient-view", json=body)
    assert response.status_code == 400, response.text
    issue = outcome(response)
    assert issue["code"] == "invalid"
    assert issue["expression"] == [field]


def test_400_order_select_needs_selections_among_the_draft_orders(service, engine):
    body = hook_request("order-select", "p13", prefetch=full_prefetch(templates(service), patient_resources("p13")),
                        drafts=drafts(engine, "p13"))
    body["context"]["selections"] = ["MedicationRequest/not-in-drafts"]
    response = service.client.post("/cds-services/sir-order-select", json=body)
    assert response.status_code == 400
    assert outcome(response)["expression"] == ["context.selections[0]"]
    del body["context"]["draftOrders"]
    response = service.client.post("/cds-services/sir-order-select", json=body)
    assert outcome(response)["expression"] == ["context.draftOrders"]


def test_400_invalid_fhir_resource_the_rules_read(service):
    resources = patient_resources("p14")
    resources["Observation"][0]["valueQuantity"]["value"] = "forty"
    body = hook_request("patient-view", "p14", prefetch=full_prefetch(templates(service), resources))
    response = service.client.post("/cds-services/sir-patient-view", json=body)
    assert response.status_code == 400
    issue = outcome(response)
    assert "Observation/p14-ins" in issue["diagnostics"]
    assert issue["expression"][0].startswith("Observation/p14-ins.valueQuantity")


def test_400_non_object_and_empty_bodies(service):
    assert post_raw(service, b"[1, 2]").status_code == 400
    assert post_raw(service, b"").status_code == 400
    assert post_raw(service, "\udcff".encode("utf-8", "surrogatepass")).status_code == 400


def test_404_unknown_service(service):
    response = service.client.post("/cds-services/no-such-service", json=hook_request("patient-view", "p"))
    assert response.status_code == 404
    assert outcome(response)["code"] == "not-found"
    assert service.client.post("/cds-services/no-such-service/feedback", json={"feedback": []}).status_code == 404


def test_413_body_too_large(start_service):
    small = start_service(max_body_bytes=2048)
    response = small.client.post("/cds-services/sir-patient-view", content=b"{" + b" " * 4096 + b"}",
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413


# -- 500 --------------------------------------------------------------------------------------------

class BrokenEngine:
    """Wraps the real engine (catalogue, digest) but fails every evaluation like an engine bug."""

    def __init__(self, engine, exc: Exception) -> None:
        self._engine, self._exc = engine, exc
        self.ruleset, self.rules, self.digest = engine.ruleset, engine.rules, engine.digest

    def evaluate(self, *args, **kwargs):
        raise self._exc


@pytest.mark.parametrize("kind", ["engine", "bug"])
def test_500_leaks_nothing(start_service, engine, kind, caplog):
    from cds._exceptions import EngineError

    secret = "internal-detail-7f3a"
    exc = EngineError(f"durable_rules failed: {secret}") if kind == "engine" else KeyError(secret)
    broken = start_service(engine_override=BrokenEngine(engine, exc))
    body = hook_request("patient-view", "p15", prefetch=full_prefetch(templates(broken), patient_resources("p15")))
    response = broken.client.post("/cds-services/sir-patient-view", json=body)
    assert response.status_code == 500
    assert response.json() == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "exception", "diagnostics": "internal error"}]}
    assert secret not in response.text
    assert secret in caplog.text  # the operator still sees it in the log


@pytest.fixture()
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_response_is_json_with_cards_only_for_order_sign(service, engine):
    body = hook_request("order-sign", "p16", prefetch=full_prefetch(templates(service), patient_resources("p16")),
                        drafts=drafts(engine, "p16"))
    response = service.client.post("/cds-services/sir-order-sign", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) <= {"cards", "systemActions"}
    json.dumps(response.json())


def test_paging_stops_at_the_bound_and_says_so(start_service, fhir):
    base, store = fhir
    bounded = start_service(fhir_max_pages=2)
    store.add_patient("p17", patient_resources("p17", extra_observations=8))  # 10 observations, 5 pages of 2
    body = hook_request("patient-view", "p17", fhir_server=base)
    response = bounded.client.post("/cds-services/sir-patient-view", json=body)
    assert response.status_code == 200, response.text
    assert len([r for r in store.requests if r["path"].endswith("/Observation")]) == 2
    from sqlalchemy import select

    from cds.service.models import CallRecord

    with bounded.state.sessions() as session:
        call = session.execute(select(CallRecord).where(CallRecord.hook_instance == body["hookInstance"])).scalar_one()
    assert any("stopped after 2 pages" in note for note in call.notes)
    assert "observations" in call.fetched_keys


def test_400_json_constants_are_not_json(service):
    response = post_raw(service, b'{"hook": "patient-view", "x": NaN}')
    assert response.status_code == 400
    assert "NaN" in outcome(response)["diagnostics"]
