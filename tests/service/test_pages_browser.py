"""The why page and the governance dashboard as a person sees them, in headless Chromium (Debian's).

What is asserted is what is on the screen: the charts are drawn (visible SVG with a real size), the
decisive value and its threshold are in the visible text, and a missing, wrong or expired link shows
no patient data at all.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest

from cds.service.why.tokens import signer_for

from svc_support import full_prefetch, hook_request, patient_resources

pytestmark = pytest.mark.browser

SERVICE = "/cds-services/sir-patient-view"


def card_for(service, pid: str, insulin: float = 40) -> dict:
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    body = hook_request("patient-view", pid, prefetch=full_prefetch(templates, patient_resources(pid, insulin=insulin)))
    response = service.client.post(SERVICE, json=body)
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    return card


def why_url(card: dict) -> str:
    (link,) = [link for link in card["links"] if link["label"] == "Why this card"]
    return link["url"]


def test_why_page_shows_charts_value_and_threshold(service, browser_page, tmp_path) -> None:
    card = card_for(service, "brw-1", insulin=40)  # 240 pmol/L against > 150 pmol/L
    response = browser_page.goto(why_url(card))
    assert response.status == 200
    charts = browser_page.locator("svg.chart")
    assert charts.count() >= 2
    box = charts.first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100  # drawn, not an empty element
    assert charts.first.is_visible()
    text = browser_page.inner_text("body")
    assert card["summary"] in text
    assert "Value the rule used: 240 pmol/L (40 uIU/mL) on 2026-01-05" in text
    assert "> severe_fasting_insulin (150 pmol/L)" in text
    chart_text = charts.first.text_content()  # SVG text stays text: the threshold is written on the chart
    assert "> 150 pmol/L" in chart_text and "240 pmol/L" in chart_text
    assert "all conditions hold" in text and "Card 0 (warning)" in text
    browser_page.screenshot(path=str(tmp_path / "why.png"), full_page=True)


def test_no_patient_data_without_a_valid_link(service, browser_page) -> None:
    card = card_for(service, "brw-2")
    url = why_url(card)
    token = url.rsplit("/", 1)[1]
    fields = base64.urlsafe_b64decode(token.split(".")[0] + "==").decode().split("|")
    signer = signer_for(service.state.settings.data_dir)
    expired = signer.sign(fields[1], card["uuid"], now=time.time() - 2 * signer.ttl_s)
    for address, status in ((f"{service.url}/why/", 404), (f"{service.url}/why/not-a-token", 404),
                            (url[:-3] + ("abc" if not url.endswith("abc") else "xyz"), 404),
                            (f"{service.url}/why/{expired}", 401)):
        response = browser_page.goto(address)
        assert response.status == status, address
        assert response.headers["cache-control"] == "no-store"
        text = browser_page.inner_text("body")
        for leaked in ("brw-2", "pmol/L", "sir-suspected", "Fasting insulin", "2026-01-05"):
            assert leaked not in text, (address, leaked)
        assert browser_page.locator("svg").count() == 0
    # and the genuine link still opens
    assert browser_page.goto(url).status == 200


def test_dashboard_in_the_browser(service, browser_page, tmp_path) -> None:
    cards = [card_for(service, f"brw-d{i}") for i in range(3)]
    now = datetime.now(UTC).isoformat()
    reason = cards[0]["overrideReasons"][0]
    feedback = [{"card": cards[0]["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
                 "overrideReason": {"reason": reason}},
                {"card": cards[1]["uuid"], "outcome": "accepted", "outcomeTimestamp": now}]
    assert service.client.post(f"{SERVICE}/feedback", json={"feedback": feedback}).status_code == 200
    # open mode without CDS_ADMIN_TOKEN: /admin answers loopback clients, as the browser here is
    response = browser_page.goto(f"{service.url}/admin/dashboard")
    assert response.status == 200
    charts = browser_page.locator("svg.chart")
    assert charts.count() == 2
    assert all(charts.nth(i).bounding_box()["width"] > 300 for i in range(2))  # type: ignore[index]
    row = browser_page.locator('tr[data-rule="sir-suspected"]')
    assert row.count() == 1
    cells = row.locator("td").all_inner_texts()
    assert int(cells[2]) >= 3 and cells[-2].endswith("%") and reason["display"] in cells[-1]
    assert "sir-suspected" in charts.nth(1).text_content()
    browser_page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    # a person picks another range with the form: an old range has no cards
    browser_page.fill('input[name="from"]', "2020-01-01")
    browser_page.fill('input[name="to"]', "2020-01-31")
    browser_page.click("button[type=submit]")
    browser_page.wait_for_url("**/admin/dashboard?from=2020-01-01&to=2020-01-31")
    assert "No card was given in this range." in browser_page.inner_text("body")
    assert browser_page.locator("svg.chart").count() == 0
