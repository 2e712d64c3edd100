"""Governance dashboard and feedback export, from real calls and real feedback posted through the API,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from svc_support import full_prefetch, hook_request, patient_resources

SERVICE = "/cds-services/sir-patient-view"
ADMIN = {"Authorization": "Bearer gov-admin-token-0123456789"}


@pytest.fixture()
def gov(start_service, db_url):
    return start_service(database_url=db_url, admin_token="gov-admin-token-0123456789")


def card_for(service, pid: str, encounter: str | None = None) -> dict:
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    body = hook_request("patient-view", pid, prefetch=full_prefetch(templates, patient_resources(pid)))
    if encounter:
        body["context"]["encounterId"] = encounter
    response = service.client.post(SERVICE, json=body)
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    return card


def post_feedback(service, items: list[dict]) -> None:
    response = service.client.post(f"{SERVICE}/feedback", json={"feedback": items})
    assert response.status_code == 200, response.text


@pytest.fixture()
def with_feedback(gov, engine):
    """Four calls with a sir-suspected card: two accepted, one overridden with a reason, one without feedback,
    plus an old override (2020) and feedback on a card this service never gave."""
    now = datetime.now(UTC).isoformat()
    cards = [card_for(gov, f"g{i}", encounter=f"Encounter/e{i}") for i in range(4)]
    reason = cards[2]["overrideReasons"][0]
    post_feedback(gov, [
        {"card": cards[0]["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": cards[0]["suggestions"][0]["uuid"]}],
         "outcomeTimestamp": now},
        {"card": cards[1]["uuid"], "outcome": "accepted", "outcomeTimestamp": now},
        {"card": cards[2]["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
         "overrideReason": {"reason": reason, "userComment": "=HYPERLINK(\"x\") already under the clinic"}},
        {"card": cards[3]["uuid"], "outcome": "overridden", "outcomeTimestamp": "2020-03-01T10:00:00Z"},
        {"card": "00000000-0000-4000-8000-00000000dead", "outcome": "accepted", "outcomeTimestamp": now},
    ])
    version = engine.ruleset.rule("sir-suspected").spec.version
    return gov, cards, reason, version


def test_admin_pages_need_the_admin_token(gov) -> None:
    for path in ("/admin/dashboard", "/admin/dashboard.json", "/admin/feedback.csv", "/admin/feedback.json"):
        assert gov.client.get(path).status_code == 403
        assert gov.client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert gov.client.get(path, headers=ADMIN).status_code == 200


def test_dashboard_figures_per_rule_version(with_feedback) -> None:
    gov, cards, reason, version = with_feedback
    figures = gov.client.get("/admin/dashboard.json", headers=ADMIN).json()
    assert figures["calls"] == 4 and figures["calls_ok"] == 4 and figures["feedback_on_unknown_cards"] == 1
    (rule,) = figures["rules"]
    assert (rule["rule_id"], rule["rule_version"], rule["calls"]) == ("sir-suspected", version, 4)
    assert rule["cards"] == {"critical": 0, "warning": 4, "info": 0}
    assert (rule["accepted"], rule["overridden"]) == (2, 1)  # the 2020 override is outside the default range
    assert rule["override_rate"] == pytest.approx(1 / 3)
    assert rule["override_reasons"] == [{"reason": reason["display"], "count": 1}]
    old = gov.client.get("/admin/dashboard.json?from=2020-03-01&to=2020-03-01", headers=ADMIN).json()
    assert old["calls"] == 0
    (old_rule,) = old["rules"]
    assert (old_rule["overridden"], old_rule["accepted"], old_rule["override_rate"]) == (1, 0, 1.0)
    assert old_rule["override_reasons"] == [{"reason": "no reason given", "count": 1}]


def test_dashboard_page(with_feedback) -> None:
    gov, _cards, reason, version = with_feedback
    page = gov.client.get("/admin/dashboard", headers=ADMIN)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    text = page.text
    assert text.count('class="chart"') == 2  # cards by indicator, feedback outcomes
    assert f'data-rule="sir-suspected" data-version="{version}"' in text
    assert "33 %" in text and reason["display"] in text
    assert "<strong>4</strong> calls" in text


def test_bad_dates_are_a_400_naming_the_parameter(gov) -> None:
    response = gov.client.get("/admin/dashboard?from=yesterday", headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["from"]
    response = gov.client.get("/admin/feedback.csv?from=2026-02-01&to=2026-01-01", headers=ADMIN)
    assert response.status_code == 400 and "after" in response.text


def test_feedback_export_csv_and_json(with_feedback) -> None:
    gov, cards, reason, version = with_feedback
    exported = gov.client.get("/admin/feedback.json", headers=ADMIN).json()["feedback"]
    assert len(exported) == 4  # the 2020 item is outside the default range
    by_card = {row["card_uuid"]: row for row in exported}
    accepted = by_card[cards[0]["uuid"]]
    assert (accepted["rule_id"], accepted["rule_version"], accepted["outcome"]) == ("sir-suspected", version, "accepted")
    assert accepted["action_taken"] == "accepted 1 suggestion(s)"
    assert accepted["accepted_suggestions"] == cards[0]["suggestions"][0]["uuid"]
    assert (accepted["user"], accepted["user_source"]) == ("Practitioner/example", "call context.userId")
    assert (accepted["service_id"], accepted["hook"], accepted["encounter"]) == (
        "sir-patient-view", "patient-view", "Encounter/e0")
    overridden = by_card[cards[2]["uuid"]]
    assert (overridden["override_reason_code"], overridden["override_reason_display"]) == (
        reason["code"], reason["display"])
    unknown = by_card["00000000-0000-4000-8000-00000000dead"]
    assert unknown["rule_id"] is None and unknown["user"] is None
    assert all(row["outcome_timestamp"].endswith("Z") for row in exported)

    response = gov.client.get("/admin/feedback.csv", headers=ADMIN)
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["card_uuid"] for r in rows] == [r["card_uuid"] for r in exported]
    csv_override = next(r for r in rows if r["card_uuid"] == cards[2]["uuid"])
    assert csv_override["override_comment"].startswith("'=HYPERLINK")  # never a live formula in a spreadsheet
    assert csv_override["user"] == "Practitioner/example" and csv_override["rule_version"] == version
    old = gov.client.get("/admin/feedback.csv?from=2020-01-01&to=2020-12-31", headers=ADMIN)
    assert [r["card_uuid"] for r in csv.DictReader(io.StringIO(old.text))] == [cards[3]["uuid"]]
