"""Card wording over every sample in fhir_samples/ (pathways.md 2, v3 changes 1, 3, 5, 7).

The samples are the patients whose cards people read; these checks hold for every card any of them
gets, so a new rule or template cannot bring back wording the catalogue forbids:

- "no pregnancy recorded", never "not pregnant" (the record shows absence, not a negative test);
- summary under 140 characters (CDS Hooks 2.0), naming no bare resource id;
- no "no X on record" / "X ... none recorded" when a record of X exists but could not be read
  (pathways.md 1: unreadable is never absent);
- no bound shown as missing ("not recorded x ULN") and no dose shown as "unknown units/day".

Everything runs through the real engine (``Engine.load()``) on the sample files themselves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds.engine import Engine

SAMPLES = Path(__file__).resolve().parents[2] / "fhir_samples"


def _entries() -> list[dict[str, Any]]:
    entries = []
    for manifest in sorted(SAMPLES.glob("manifest-*.yaml")):
        entries += (yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}).get("samples") or []
    return entries


ENTRIES = _entries()


@pytest.fixture(scope="module")
def evaluations() -> list[tuple[str, Any]]:
    engine = Engine.load()
    out = []
    for entry in ENTRIES:
        payload = json.loads((SAMPLES / entry["file"]).read_text(encoding="utf-8"))
        out.append((entry["file"], engine.evaluate(payload, hook=entry.get("hook"), now=str(entry["now"]))))
    return out


def _texts(card: Any) -> str:
    return "\n".join([card.summary, card.detail or ""] + [s.label for s in card.suggestions or []])


def test_samples_exist_and_produce_cards(evaluations: list[tuple[str, Any]]) -> None:
    assert len(evaluations) > 50
    assert sum(len(e.cards) for _f, e in evaluations) > 50  # the checks below see real cards


def test_no_card_says_not_pregnant(evaluations: list[tuple[str, Any]]) -> None:
    bad = [(f, c.source.topic.code) for f, e in evaluations for c in e.cards
           if re.search(r"\bnot\s+pregnant\b", _texts(c), re.IGNORECASE)]
    assert bad == []


def test_pregnancy_absence_is_worded_as_not_recorded(evaluations: list[tuple[str, Any]]) -> None:
    """Some sample card words pregnancy the catalogue's way ("no pregnancy recorded" / "pregnancy
    recorded"), so the "not pregnant" check above runs over cards that talk about pregnancy."""
    mentions = [_texts(c) for _f, e in evaluations for c in e.cards if "pregnancy recorded" in _texts(c)]
    assert mentions, "no sample card mentions pregnancy: the wording check would prove nothing"


def test_summaries_are_short_and_name_no_bare_resource_id(evaluations: list[tuple[str, Any]]) -> None:
    for file, evaluation in evaluations:
        for card in evaluation.cards:
            assert len(card.summary) < 140, (file, card.summary)
            assert not re.search(r"\b(Observation|MedicationRequest|MedicationStatement|Condition|Medication)/\S+",
                                 card.summary), (file, card.summary)


def test_unreadable_records_are_never_called_missing(evaluations: list[tuple[str, Any]]) -> None:
    checked = 0
    for file, evaluation in evaluations:
        for name, item in evaluation.facts.unreadable.items():
            titles = {name, name.replace("_", " "), item.title or name}
            if name == "lvef":
                titles.add("LVEF")
            for card in evaluation.cards:
                text = _texts(card)
                checked += 1
                for title in titles:
                    t = re.escape(title)
                    missing = rf"\bno {t}\b[^.\n]{{0,40}}(on record|recorded)"
                    assert not re.search(missing, text, re.IGNORECASE), (file, title, text)
                    assert not re.search(rf"\b{t}\b[^.\n]{{0,30}}none recorded", text, re.IGNORECASE), (file, title, text)
    assert checked, "no sample has an unreadable value: add one"


def test_bounds_and_doses_are_never_shown_as_missing(evaluations: list[tuple[str, Any]]) -> None:
    for file, evaluation in evaluations:
        for card in evaluation.cards:
            text = _texts(card)
            assert "not recorded x ULN" not in text, (file, text)
            assert not re.search(r"unknown (units|U)/day", text), (file, text)
            assert not re.search(r"^- \d{5,}( \(|$)", text, re.MULTILINE), (file, "a medication shown by code only")
