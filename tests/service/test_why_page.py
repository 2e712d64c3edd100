"""The "Why this card" page over a real server: every card links to it, the link is the credential
(card-bound, signed, expiring), and the page shows what the call had without fetching anything again."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
from markupsafe import escape
from sqlalchemy import select

from cds.service.why.store import EvaluationRecord
from cds.service.why.tokens import signer_for

from svc_support import full_prefetch, hook_request, patient_resources

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "fhir_samples" / "requests").glob("*.json"))
SERVICE_FOR_HOOK = {"patient-view": "sir-patient-view", "order-select": "sir-order-select", "order-sign": "sir-order-sign"}
SERVICE = "/cds-services/sir-patient-view"


def templates(service) -> dict[str, str]:
    return service.state.holder.current().catalog["sir-patient-view"].prefetch


def why_links(card: dict) -> list[dict]:
    return [link for link in card.get("links") or [] if link["label"] == "Why this card"]


def token_of(url: str) -> str:
    return url.rsplit("/why/", 1)[1]


def card_call(service, pid: str, **kwargs) -> dict:
    body = hook_request("patient-view", pid, prefetch=full_prefetch(templates(service), patient_resources(pid, **kwargs)))
    response = service.client.post(SERVICE, json=body)
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    return card


def assert_no_patient_data(response, *values: str) -> None:
    assert response.headers["cache-control"] == "no-store"
    for value in values:
        assert value not in response.text


def test_every_card_of_every_sample_links_to_a_page_that_explains_it(service, engine) -> None:
    """All request samples over HTTP: each card has exactly one link; one page per rule is opened."""
    seen_rules: dict[str, tuple[str, dict]] = {}
    cards_total = 0
    for path in SAMPLES:
        body = json.loads(path.read_text())
        response = service.client.post(f"/cds-services/{SERVICE_FOR_HOOK[body['hook']]}", json=body)
        assert response.status_code == 200, (path.name, response.text)
        for card in response.json()["cards"]:
            cards_total += 1
            (link,) = why_links(card)
            assert link["type"] == "absolute" and link["url"].startswith(f"{service.url}/why/"), path.name
            seen_rules.setdefault(card["source"]["topic"]["code"], (link["url"], card))
    assert cards_total >= 60 and len(seen_rules) >= 15
    for rule_id, (url, card) in sorted(seen_rules.items()):
        page = service.client.get(url)
        assert page.status_code == 200, (rule_id, page.text[:500])
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["content-type"].startswith("text/html")
        text = page.text
        spec = engine.ruleset.rule(rule_id).spec
        assert f"<td>{rule_id}</td>" in text and f"<td>{spec.version}" in text
        assert str(escape(card["summary"])) in text
        assert "The rule's conditions" in text
        assert "do not give this card" not in text, rule_id  # the stored values reproduce the card
        assert "all conditions hold" in text, rule_id
        # the rule's HTI-1 source attributes, FDA criterion-4 basis and approval, as the rule file has them
        assert "Source attributes (ONC HTI-1" in text and "Basis of the recommendation (FDA CDS guidance" in text
        assert str(escape(spec.source_attributes.citation)) in text
        assert spec.approval is not None and str(escape(spec.approval.approved_by)) in text
        assert "{1.73_m2}" not in text  # units in plain notation


def test_page_shows_the_decisive_value_threshold_and_chart(service) -> None:
    card = card_call(service, "why-1", insulin=40)  # 40 uIU/mL = 240 pmol/L > 150
    (link,) = why_links(card)
    page = service.client.get(link["url"])
    assert page.status_code == 200
    text = page.text
    assert text.count("<svg") >= 2  # fasting insulin and BMI at least
    assert "240 pmol/L (40 uIU/mL) on 2026-01-05" in text  # the value the rule used, with its date
    assert "150 pmol/L" in text and "&gt; 150 pmol/L" in text  # the threshold, also drawn on the chart
    assert "sir-suspected" in text and "Observation/why-1-ins" in text  # evidence names the record
    assert 'id="more"' in text and "Supporting features" in text  # the longer text the short card leaves out


def test_link_is_bound_to_its_card_and_signed(service) -> None:
    first, second = card_call(service, "why-2"), card_call(service, "why-3")
    token = token_of(why_links(first)[0]["url"])
    payload, signature = token.split(".")
    fields = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split("|")
    # the same signature on a payload naming the other card is refused
    other = "|".join([fields[0], fields[1], second["uuid"], fields[3]]).encode()
    forged = base64.urlsafe_b64encode(other).rstrip(b"=").decode() + "." + signature
    for bad in (forged, token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "x", "a.b", "." * 3, "%00"):
        response = service.client.get(f"/why/{bad}")
        assert response.status_code == 404, bad
        assert_no_patient_data(response, "why-2", "why-3", "pmol/L")
    assert service.client.get("/why/").status_code == 404
    assert "why-2" not in service.client.get("/why/").text
    # a genuine signature over an evaluation this service never stored
    signer = signer_for(service.state.settings.data_dir)
    unknown = signer.sign("00000000-0000-4000-8000-000000000000", first["uuid"])
    assert service.client.get(f"/why/{unknown}").status_code == 404
    # and a genuine token of one call's key with a card of another call
    crossed = signer.sign(fields[1], second["uuid"])
    assert_no_patient_data(service.client.get(f"/why/{crossed}"), "why-3")
    assert service.client.get(f"/why/{crossed}").status_code == 404


def test_expired_link_is_refused_without_patient_data(service) -> None:
    card = card_call(service, "why-4")
    fields = base64.urlsafe_b64decode(token_of(why_links(card)[0]["url"]).split(".")[0] + "==").decode().split("|")
    signer = signer_for(service.state.settings.data_dir)
    expired = signer.sign(fields[1], card["uuid"], now=time.time() - 2 * signer.ttl_s)
    still_valid = signer.sign(fields[1], card["uuid"], now=time.time() - signer.ttl_s + 120)
    response = service.client.get(f"/why/{expired}")
    assert response.status_code == 401
    assert_no_patient_data(response, "why-4", "pmol/L", "sir-suspected")
    assert "expired" in response.text
    assert service.client.get(f"/why/{still_valid}").status_code == 200
    # the default lifetime is a few hours
    assert int(fields[3]) - time.time() == pytest.approx(4 * 3600, abs=120)


def test_secret_is_generated_once_persisted_private_and_survives_a_restart(start_service, tmp_path) -> None:
    data = tmp_path / "svcdata"
    first = start_service(data_dir=data)
    url = why_links(card_call(first, "why-5"))[0]["url"]
    secret_file = data / "why-secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert len(secret_file.read_text().strip()) == 64
    database_url = first.state.settings.resolved_database_url()
    second = start_service(data_dir=data, database_url=database_url)
    assert second.client.get(url.replace(first.url, second.url)).status_code == 200
    # another data folder has another secret: the same link is refused
    third = start_service(data_dir=tmp_path / "elsewhere", database_url=database_url)
    assert third.client.get(url.replace(first.url, third.url)).status_code == 404


def test_configured_secret_and_public_base_url(start_service, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CDS_WHY_SECRET", "s" * 40)
    monkeypatch.setenv("CDS_WHY_TTL_S", "900")
    service = start_service(data_dir=tmp_path / "d", public_base_url="https://cds.example.org/sir/")
    (link,) = why_links(card_call(service, "why-6"))
    assert link["url"].startswith("https://cds.example.org/sir/why/")
    assert not (tmp_path / "d" / "why-secret").exists()
    token = token_of(link["url"])
    expires = int(base64.urlsafe_b64decode(token.split(".")[0] + "==").decode().split("|")[3])
    assert expires - time.time() == pytest.approx(900, abs=60)
    assert service.client.get(f"/why/{token}").status_code == 200


def test_page_uses_the_fetched_resources_and_never_fetches_again(service, fhir) -> None:
    base, store = fhir
    store.add_patient("why-7", patient_resources("why-7", insulin=50))  # 300 pmol/L, from the FHIR server
    response = service.client.post(SERVICE, json=hook_request("patient-view", "why-7", fhir_server=base, token="tok-why"))
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert store.requests  # the call fetched its data
    store.requests.clear()
    store.resources.clear()  # the record is gone from the FHIR server
    page = service.client.get(why_links(card)[0]["url"])
    assert page.status_code == 200
    assert "300 pmol/L (50 uIU/mL) on 2026-01-05" in page.text
    assert store.requests == []  # nothing was fetched again
    with service.state.sessions() as session:
        row = session.execute(select(EvaluationRecord).where(EvaluationRecord.card_uuids.is_not(None))
                               .order_by(EvaluationRecord.id.desc()).limit(1)).scalar_one()
    assert card["uuid"] in row.card_uuids
    assert b"tok-why" not in row.snapshot and "tok-why" not in page.text  # the access token is never stored


@pytest.fixture()
def db_service(start_service, db_url):
    return start_service(database_url=db_url)


def test_page_on_sqlite_and_postgresql(db_service) -> None:
    card = card_call(db_service, "why-8")
    with db_service.state.sessions() as session:
        (row,) = session.execute(select(EvaluationRecord)).scalars().all()
    assert row.card_uuids == [card["uuid"]] and 0 < len(row.snapshot) < row.snapshot_bytes
    page = db_service.client.get(why_links(card)[0]["url"])
    assert page.status_code == 200 and re.search(r"<svg[^>]*class=\"chart\"", page.text)


def test_odd_but_valid_json_never_costs_the_card_or_the_audit(service) -> None:
    """A lone surrogate ("\\ud800", valid JSON text) in the record: the card, its link and the page still work."""
    resources = patient_resources("why-9")
    resources["Patient"][0]["name"] = [{"text": "Ann\ud800 Example"}]
    body = hook_request("patient-view", "why-9", prefetch=full_prefetch(templates(service), resources))
    text = json.dumps(body)  # ensure_ascii: the lone surrogate travels as the escape \ud800
    assert "\\ud800" in text
    response = service.client.post(SERVICE, content=text.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    page = service.client.get(why_links(card)[0]["url"])
    assert page.status_code == 200 and "240 pmol/L" in page.text
