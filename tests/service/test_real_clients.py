"""Tolerant of real clients (issue 10, item 5): the CDS Hooks sandbox's own order-select and order-sign
bodies (draft MedicationRequest with ``category`` as one object, RxNorm 861007, eGFR 24) get the
critical metformin card over HTTP; a draft without a medication is ignored with an audit note; feedback
with only an override reason code stores the card's own display; feedback on an unknown card is kept
and clearly marked."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from cds.service.models import CallRecord, FeedbackRecord

REQUESTS = Path(__file__).resolve().parents[2] / "fhir_samples" / "requests"
SANDBOX = {"order-select": REQUESTS / "metformin-renal-sandbox-order-select-category-object.json",
           "order-sign": REQUESTS / "metformin-renal-sandbox-order-sign-category-object.json"}


def _sandbox_body(hook: str) -> dict:
    """The sample with its labs moved to 30 days ago, so the eGFR is recent whenever the test runs."""
    body = json.loads(SANDBOX[hook].read_text(encoding="utf-8"))
    body["hookInstance"] = str(uuid.uuid4())  # each call its own, as the sandbox does
    recent = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for entry in body["prefetch"]["observations"]["entry"]:
        entry["resource"]["effectiveDateTime"] = recent
    return body


def _row(service, hook_instance: str) -> CallRecord:
    with service.state.sessions() as session:
        (row,) = session.execute(select(CallRecord).where(CallRecord.hook_instance == hook_instance)).scalars().all()
        return row


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_the_sandbox_draft_with_category_as_an_object_gets_the_critical_metformin_card(service, hook):
    body = _sandbox_body(hook)
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    assert isinstance(draft["category"], dict)  # as the sandbox sends it (R4 has a list)
    assert draft["medicationCodeableConcept"]["coding"][0]["code"] == "861007"
    response = service.client.post(f"/cds-services/sir-{hook}", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [("metformin-renal", "critical")]
    assert _row(service, body["hookInstance"]).outcome == "ok"


def test_a_resource_is_still_refused_for_a_malformed_element_the_facts_read(service):
    body = _sandbox_body("order-sign")
    body["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"] = ["not", "a", "concept"]
    response = service.client.post("/cds-services/sir-order-sign", json=body)
    assert response.status_code == 400, response.text
    assert "medicationCodeableConcept" in response.json()["issue"][0]["diagnostics"]


def test_a_draft_without_a_medication_is_ignored_with_an_audit_note(service):
    """The sandbox's first order-select: a draft with no medication (and no intent) yet."""
    body = _sandbox_body("order-select")
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    del draft["medicationCodeableConcept"], draft["intent"], draft["dosageInstruction"]
    response = service.client.post("/cds-services/sir-order-select", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["cards"] == []
    row = _row(service, body["hookInstance"])
    assert row.outcome == "ok"
    assert "draft MedicationRequest/request-123 has no medication: ignored" in row.notes


def test_feedback_with_only_an_override_code_stores_the_cards_own_display(service):
    body = _sandbox_body("order-sign")
    card = service.client.post("/cds-services/sir-order-sign", json=body).json()["cards"][0]
    offered = card["overrideReasons"][1]
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-12-01T10:00:00Z",
            "overrideReason": {"reason": {"system": offered["system"], "code": offered["code"]}}}
    response = service.client.post("/cds-services/sir-order-sign/feedback", json={"feedback": [item]})
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 1, "duplicates": 0}
    with service.state.sessions() as session:
        (row,) = session.execute(select(FeedbackRecord).where(FeedbackRecord.card_uuid == card["uuid"])).scalars().all()
    assert (row.override_code, row.override_display, row.rule_id, row.card_known) == (
        offered["code"], offered["display"], "metformin-renal", True)


def test_feedback_on_an_unknown_card_is_kept_and_clearly_marked(service):
    item = {"card": "5f0b7a4e-0000-4000-8000-000000000000", "outcome": "overridden",
            "outcomeTimestamp": "2026-12-01T10:00:00Z", "overrideReason": {"reason": {"code": "not-applicable"}}}
    response = service.client.post("/cds-services/sir-order-sign/feedback", json={"feedback": [item]})
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 1, "duplicates": 0, "unknownCards": [item["card"]]}
    with service.state.sessions() as session:
        (row,) = session.execute(select(FeedbackRecord).where(FeedbackRecord.card_uuid == item["card"])).scalars().all()
    assert (row.card_known, row.rule_id, row.override_display) == (False, None, None)
