"""How long the cards are that clinicians read: every card of every sample in ``fhir_samples/``.

Why: an EHR side panel holds about eight short lines (issue 12), so the length of ``detail`` is a
clinical-usability property of the rules, measured the way the cards are really produced (the
Engine on each manifest entry, at the manifest's ``now``) rather than estimated from the
templates. ``tests/authoring/test_card_size.py`` asserts the budget on them and prints the figures.

The budget (:data:`cds.rules.validators.DETAIL_MAX_LINES` and friends) is checked here on every
rendered card, and estimated from each template by ``cds rules validate`` (an error).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cds.fhir.dates import parse_now
from cds.rules.model import RuleSet
from cds.rules.validators import DETAIL_MAX_CHARS, DETAIL_MAX_LINE_CHARS, DETAIL_MAX_LINES

__all__ = ["DETAIL_MAX_CHARS", "DETAIL_MAX_LINES", "DETAIL_MAX_LINE_CHARS", "RenderedCard", "detail_lines",
           "detail_problem", "sample_cards", "size_report"]



def detail_lines(detail: str) -> list[str]:
    """The lines a clinician sees: non-blank Markdown lines (a blank line is a paragraph break)."""
    return [line for line in detail.splitlines() if line.strip()]


def detail_problem(detail: str) -> str | None:
    """Why a rendered ``detail`` breaks the budget, or None."""
    lines = detail_lines(detail)
    if len(lines) > DETAIL_MAX_LINES:
        return f"detail has {len(lines)} lines (at most {DETAIL_MAX_LINES})"
    long = [line for line in lines if len(line) > DETAIL_MAX_LINE_CHARS]
    if long:
        return (f"a detail line has {len(long[0])} characters (at most {DETAIL_MAX_LINE_CHARS}): "
                f"{long[0][:60]!r}...")
    if len(detail) > DETAIL_MAX_CHARS:
        return f"detail has {len(detail)} characters (at most {DETAIL_MAX_CHARS})"
    return None


@dataclass(frozen=True)
class RenderedCard:
    sample: str
    rule: str
    indicator: str
    summary: str
    detail: str

    @property
    def lines(self) -> int:
        return len(detail_lines(self.detail))


def _load_payload(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def sample_cards(samples_dir: Path, ruleset: RuleSet) -> list[RenderedCard]:
    """Every card the Engine gives for every manifest entry (drafts excluded, as the service runs)."""
    from cds.engine import Engine

    engine = Engine(ruleset)
    cards: list[RenderedCard] = []
    for manifest in sorted(samples_dir.glob("manifest-*.yaml")):
        for entry in (yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}).get("samples") or []:
            payload = _load_payload(samples_dir / entry["file"])
            hook = entry.get("hook") if entry["file"].startswith("bundles/") else None
            result = engine.evaluate(payload, hook=hook, now=parse_now(str(entry["now"])))
            for card in result.response.to_json().get("cards", []):
                topic = (card.get("source") or {}).get("topic") or {}
                cards.append(RenderedCard(entry["file"], topic.get("code", "?"), card["indicator"],
                                          card["summary"], card.get("detail") or ""))
    return cards


def size_report(cards: list[RenderedCard]) -> dict[str, Any]:
    """Longest and median detail, in characters and lines, and which card is the longest."""
    if not cards:
        return {"cards": 0}
    chars = [len(c.detail) for c in cards]
    lines = [c.lines for c in cards]
    longest = max(cards, key=lambda c: len(c.detail))
    return {
        "cards": len(cards),
        "detail_chars_max": max(chars),
        "detail_chars_median": statistics.median(chars),
        "detail_lines_max": max(lines),
        "detail_lines_median": statistics.median(lines),
        "longest": {"rule": longest.rule, "sample": longest.sample, "chars": len(longest.detail),
                    "lines": longest.lines},
        "over_budget": sorted({c.rule for c in cards if detail_problem(c.detail)}),
    }
