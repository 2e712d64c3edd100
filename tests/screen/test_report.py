"""report.html renders in headless Chromium, offline, with its charts and the top of the worklist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cds.screen.outputs import read_worklist_csv


@pytest.mark.browser
def test_report_renders_offline_with_charts_and_the_worklist(synthea_screen: Path, browser_page: object) -> None:
    page = browser_page
    report = synthea_screen / "report.html"
    text = report.read_text(encoding="utf-8")
    # self-contained: nothing to fetch, nothing to run
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text.lower()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))  # type: ignore[attr-defined]
    page.context.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:")  # type: ignore[attr-defined]
                       else route.continue_())
    page.goto(report.as_uri())  # type: ignore[attr-defined]
    assert all(url.startswith("file:") for url in requests), requests
    charts = page.locator("#charts svg")  # type: ignore[attr-defined]
    assert charts.count() == 2
    for index in range(2):
        box = charts.nth(index).bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 80
    assert page.locator("#charts svg").first.locator("text", has_text="safety-data-needed").count() >= 1  # type: ignore[attr-defined]
    rows = read_worklist_csv(synthea_screen / "worklist.csv")
    table_rows = page.locator("#worklist tbody tr")  # type: ignore[attr-defined]
    assert table_rows.count() == min(50, len(rows))
    first = table_rows.first
    assert first.is_visible()
    cells = first.locator("td").all_inner_texts()
    assert cells[0] == rows[0]["patient_id"] and cells[3] == rows[0]["summary"]
    assert page.title().startswith(f"Population screen: {len(rows)} cards")  # type: ignore[attr-defined]


def test_report_of_the_samples_draws_key_values_against_thresholds(samples_export: object, tmp_path: Path) -> None:
    from .conftest import run_cds
    from .exports import NOW

    out = tmp_path / "out"
    done = run_cds("screen", str(samples_export.folder), "--out", str(out), "--now", NOW, "--workers", "1")  # type: ignore[attr-defined]
    assert done.returncode == 0, done.stderr
    text = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="value-charts"' in text
    assert "fasting_insulin" in text and "egfr" in text
    # the metformin eGFR thresholds of the loaded rules are drawn on the eGFR chart
    assert re.search(r"30 \([^)]*metformin-renal", text) and re.search(r"45 \([^)]*metformin", text)
    assert 'class="critical">critical<' in text
