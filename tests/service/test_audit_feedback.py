"""Audit trail and feedback, read back from the database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from sqlalchemy import select, text

from cds.service.models import CallRecord, CardRecord, FeedbackRecord

from svc_support import full_prefetch, hook_request, patient_resources

SERVICE = "/cds-services/sir-patient-view"


@pytest.fixture()
def db_service(start_service, db_url):
    return start_service(database_url=db_url)


def templates(service) -> dict[str, str]:
    return service.state.holder.current().catalog["sir-patient-view"].prefetch


def rows(service, model, **where):
    with service.state.sessions() as session:
        query = select(model).order_by(model.id)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return session.execute(query).scalars().all()


def call_with_card(service, pid: str) -> tuple[dict, dict]:
    body = hook_request("patient-view", pid, prefetch=full_prefetch(templates(service), patient_resources(pid)))
    response = service.client.post(SERVICE, json=body)
    assert response.status_code == 200, response.text
    return body, response.json()["cards"][0]


def test_every_call_is_audited_with_cards_rules_digest_and_latency(db_service, engine):
    body, card = call_with_card(db_service, "a1")
    (call,) = rows(db_service, CallRecord, hook_instance=body["hookInstance"])
    assert (call.service_id, call.hook, call.patient_id, call.outcome, call.http_status) == (
        "sir-patient-view", "patient-view", "a1", "ok", 200)
    assert call.rule_ids == ["sir-suspected"] and call.card_uuids == [card["uuid"]]
    assert call.ruleset_digest == engine.digest
    assert 0 < call.latency_ms < 30_000
    assert call.request == body  # everything the EHR sent, replayable
    (card_row,) = rows(db_service, CardRecord, card_uuid=card["uuid"])
    assert (card_row.rule_id, card_row.rule_version, card_row.indicator, card_row.call_id) == (
        "sir-suspected", engine.ruleset.rule("sir-suspected").spec.version, "warning", call.id)


def test_failed_calls_are_audited_too(db_service):
    bad = db_service.client.post(SERVICE, content=b'{"hook": ', headers={"content-type": "application/json"})
    assert bad.status_code == 400
    missing = hook_request("patient-view", "a2")
    assert db_service.client.post(SERVICE, json=missing).status_code == 412
    assert db_service.client.post("/cds-services/nope", json=missing).status_code == 404
    outcomes = [(r.outcome, r.http_status, r.service_id) for r in rows(db_service, CallRecord)]
    assert outcomes == [("bad-request", 400, "sir-patient-view"), ("precondition-failed", 412, "sir-patient-view"),
                        ("not-found", 404, "nope")]
    first, second, third = rows(db_service, CallRecord)
    assert first.request is None and first.request_raw == '{"hook": '
    assert second.request == missing and second.patient_id == "a2"
    assert "prefetch." in second.error
    assert third.request == missing  # even a call to an unknown service keeps what it sent


def test_feedback_round_trip(db_service, engine):
    _, card = call_with_card(db_service, "f1")
    suggestion = card["suggestions"][0]["uuid"]
    accepted = {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
                "outcomeTimestamp": "2026-01-06T10:00:00Z"}
    response = db_service.client.post(f"{SERVICE}/feedback", json={"feedback": [accepted]})
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 1, "duplicates": 0}

    _, card2 = call_with_card(db_service, "f2")
    reason = card2["overrideReasons"][0] if card2.get("overrideReasons") else {
        "system": "https://example.org/reasons", "code": "not-applicable", "display": "Not applicable"}
    overridden = {"card": card2["uuid"], "outcome": "overridden",
                  "overrideReason": {"reason": reason, "userComment": "already referred last month"},
                  "outcomeTimestamp": "2026-01-06T11:30:00+01:00"}
    assert db_service.client.post(f"{SERVICE}/feedback", json={"feedback": [overridden]}).json() == {
        "stored": 1, "duplicates": 0}

    stored = rows(db_service, FeedbackRecord)
    assert [(f.card_uuid, f.outcome, f.rule_id) for f in stored] == [
        (card["uuid"], "accepted", "sir-suspected"), (card2["uuid"], "overridden", "sir-suspected")]
    first, second = stored
    assert first.accepted_suggestions == [suggestion]
    assert first.rule_version == engine.ruleset.rule("sir-suspected").spec.version
    assert first.call_id == rows(db_service, CardRecord, card_uuid=card["uuid"])[0].call_id
    assert (second.override_code, second.override_display, second.override_comment) == (
        reason["code"], reason["display"], "already referred last month")
    assert second.outcome_timestamp.replace(tzinfo=None).isoformat() == "2026-01-06T10:30:00"  # stored in UTC
    assert second.item == overridden


def test_duplicate_feedback_is_stored_once(db_service):
    _, card = call_with_card(db_service, "f3")
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-01-06T10:00:00Z"}
    assert db_service.client.post(f"{SERVICE}/feedback", json={"feedback": [item, item]}).json() == {
        "stored": 1, "duplicates": 1}
    # the same instant written differently is the same feedback
    again = dict(item, outcomeTimestamp="2026-01-06T11:00:00+01:00")
    assert db_service.client.post(f"{SERVICE}/feedback", json={"feedback": [again]}).json() == {
        "stored": 0, "duplicates": 1}
    assert len(rows(db_service, FeedbackRecord, card_uuid=card["uuid"])) == 1


def test_feedback_on_an_unknown_card_is_kept_without_a_rule(db_service):
    item = {"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "2026-01-06T10:00:00Z"}
    assert db_service.client.post(f"{SERVICE}/feedback", json={"feedback": [item]}).status_code == 200
    (row,) = rows(db_service, FeedbackRecord, card_uuid=item["card"])
    assert row.rule_id is None and row.call_id is None


@pytest.mark.parametrize(("item", "field"), [
    ({"outcome": "accepted", "outcomeTimestamp": "2026-01-06T10:00:00Z"}, "feedback[0].card"),
    ({"card": "c", "outcome": "maybe", "outcomeTimestamp": "2026-01-06T10:00:00Z"}, "feedback[0].outcome"),
    ({"card": "c", "outcome": "accepted"}, "feedback[0].outcomeTimestamp"),
    ({"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-06T10:00:00"}, "feedback[0].outcomeTimestamp"),
    ({"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-06T10:00:00Z",
      "overrideReason": {"userComment": "x"}}, "feedback[0].overrideReason"),
    ({"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-06T10:00:00Z",
      "acceptedSuggestions": [{"id": "s"}]}, "feedback[0].acceptedSuggestions"),
])
def test_invalid_feedback_is_refused_with_the_field(service, item, field):
    response = service.client.post(f"{SERVICE}/feedback", json={"feedback": [item]})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == [field]


def test_feedback_needs_at_least_one_item_and_json(service):
    assert service.client.post(f"{SERVICE}/feedback", json={"feedback": []}).json()["issue"][0]["expression"] == [
        "feedback"]
    assert service.client.post(f"{SERVICE}/feedback", content=b"nope").status_code == 400


def test_tokens_never_reach_the_database_or_the_logs(db_service, fhir, caplog):
    """The FHIR access token (and a JWT-looking string) sent in several ways: stored and logged nowhere."""
    base, store = fhir
    store.add_patient("t1", patient_resources("t1"))
    token = "fhir-token-" + uuid.uuid4().hex
    caplog.set_level(logging.DEBUG)
    ok = db_service.client.post(SERVICE, json=hook_request("patient-view", "t1", fhir_server=base, token=token))
    assert ok.status_code == 200
    assert store.requests and all(r["authorization"] == f"Bearer {token}" for r in store.requests)
    # a 412 (server unreachable), a 400 (schema) and a non-JSON body that still carries the token
    unreachable = hook_request("patient-view", "t1", fhir_server="http://127.0.0.1:9/fhir", token=token)
    assert db_service.client.post(SERVICE, json=unreachable).status_code == 412
    invalid = hook_request("patient-view", "t1", fhir_server=base, token=token)
    invalid["fhirAuthorization"]["expires_in"] = "soon"
    assert db_service.client.post(SERVICE, json=invalid).status_code == 400
    broken = json.dumps(hook_request("patient-view", "t1", fhir_server=base, token=token))[:-3]
    assert db_service.client.post(SERVICE, content=broken.encode()).status_code == 400

    with db_service.state.db.connect() as conn:
        dump = "\n".join(
            repr(tuple(row)) for table in ("cds_call", "cds_card", "cds_feedback")
            for row in conn.execute(text(f"SELECT * FROM {table}")))  # noqa: S608 - fixed names
    assert "t1" in dump and "[redacted]" in dump
    assert token not in dump
    assert token not in caplog.text
    calls = rows(db_service, CallRecord, patient_id="t1")
    assert calls[0].request["fhirAuthorization"] == {"access_token": "[redacted]", "token_type": "Bearer",
                                                     "expires_in": 300, "scope": "patient/*.read",
                                                     "subject": "cds-service"}


def test_oversized_identifiers_are_refused_or_truncated_not_lost(db_service):
    item = {"card": "c" * 101, "outcome": "accepted", "outcomeTimestamp": "2026-01-06T10:00:00Z"}
    response = db_service.client.post(f"{SERVICE}/feedback", json={"feedback": [item]})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["feedback[0].card"]
    body = hook_request("patient-view", "a3")
    body["hookInstance"] = "x" * 500
    assert db_service.client.post(SERVICE, json=body).status_code == 400
    (call,) = rows(db_service, CallRecord, patient_id="a3")
    assert call.hook_instance == "x" * 100 and call.request["hookInstance"] == "x" * 500
