"""The governance dashboard as HTML: tables and inline SVG charts (matplotlib), no script.

Kept apart from :mod:`cds.service.governance` (the figures) so the figures can be exported as JSON
without importing matplotlib or Jinja.
"""

from __future__ import annotations

from markupsafe import Markup

from cds.service.governance import INDICATORS, Summary
from cds.service.html import environment

__all__ = ["render_dashboard"]


def render_dashboard(result: Summary, *, query: str = "") -> str:
    from cds.service.why.charts import bar_chart

    labels = [r.label for r in result.rules]
    cards_chart = feedback_chart = None
    if result.rules:
        cards_chart = Markup(bar_chart("Cards by indicator, per rule version", labels,
                                       {i: [r.cards.get(i, 0) for r in result.rules] for i in INDICATORS},
                                       ylabel="cards"))
        answered = [r for r in result.rules if r.accepted or r.overridden]
        if answered:
            feedback_chart = Markup(bar_chart(
                "Feedback outcomes, per rule version", [r.label for r in answered],
                {"accepted": [r.accepted for r in answered], "overridden": [r.overridden for r in answered]},
                ylabel="feedback items"))
    suffix = f"?{query}" if query else ""
    return environment().get_template("dashboard.html").render(
        summary=result, cards_chart=cards_chart, feedback_chart=feedback_chart, indicators=INDICATORS,
        export_csv=f"feedback.csv{suffix}", export_json=f"feedback.json{suffix}")
