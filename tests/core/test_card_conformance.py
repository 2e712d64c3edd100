"""Card conformance (catalogue v3 issue item 5): several isRecommended suggestions need selectionBehavior "any".

Checked three ways, each able to fail on its own: the Card model refuses a non-conforming card; ``cds
rules validate`` refuses a rule that could render one (file, line, rule id); and every card of every
sample in fhir_samples/ conforms and is in catalogue order (critical, warning, info; safety rules first
within an indicator).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from cds.cards.models import Action, Card, Source, Suggestion
from cds.cards.order import INDICATOR_ORDER, is_safety_rule
from cds.cli import cli
from cds.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "fhir_samples"


def _suggestion(label: str, recommended: bool | None) -> Suggestion:
    return Suggestion(label=label, isRecommended=recommended,
                      actions=[Action(type="delete", description=label, resourceId="MedicationRequest/1")])


def _card(selection: str, *recommended: bool | None) -> Card:
    return Card(summary="summary", indicator="warning", source=Source(label="test"),
                suggestions=[_suggestion(f"s{i}", r) for i, r in enumerate(recommended)],
                selectionBehavior=selection)


def test_two_recommended_under_at_most_one_is_refused() -> None:
    with pytest.raises(ValidationError, match="isRecommended only with selectionBehavior 'any'"):
        _card("at-most-one", True, True)


def test_two_recommended_under_any_is_accepted() -> None:
    assert _card("any", True, True, None).selectionBehavior == "any"


def test_one_recommended_under_at_most_one_is_accepted() -> None:
    assert _card("at-most-one", True, False, None).suggestions is not None


# --- cds rules validate ---------------------------------------------------------------------------

def _ruleset_with(tmp_path: Path, rule_id: str, edit) -> Path:
    """A copy of the shipped rulesets where ``edit`` changes the parsed YAML of one rule."""
    target = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", target, ignore=shutil.ignore_patterns("__pycache__"))
    path = target / "rules" / f"{rule_id}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return target


def test_validate_refuses_a_rule_recommending_two_suggestions_under_at_most_one(tmp_path: Path) -> None:
    def two_recommended(data: dict) -> None:
        card = data["cards"][0]  # the leptin / adiponectin / TG / referral card of sir-suspected
        card.pop("selection", None)
        for suggestion in card["suggestions"][:2]:
            suggestion["recommended"] = True

    folder = _ruleset_with(tmp_path, "sir-suspected", two_recommended)
    result = CliRunner().invoke(cli, ["rules", "validate", str(folder)])
    assert result.exit_code == 1, result.output
    line = next(text for text in result.output.splitlines() if "isRecommended" in text)
    assert "sir-suspected.yaml:" in line and "[sir-suspected]" in line and "card 0" in line
    assert "selection: any" in line  # says how to fix it


def test_validate_accepts_the_same_card_with_selection_any(tmp_path: Path) -> None:
    def two_recommended_any(data: dict) -> None:
        card = data["cards"][0]
        card["selection"] = "any"
        for suggestion in card["suggestions"][:2]:
            suggestion["recommended"] = True

    folder = _ruleset_with(tmp_path, "sir-suspected", two_recommended_any)
    result = CliRunner().invoke(cli, ["rules", "validate", str(folder)])
    assert "isRecommended" not in result.output


# --- every card of every sample ---------------------------------------------------------------------

def _entries() -> list[dict]:
    entries = []
    for manifest in sorted(SAMPLES.glob("manifest-*.yaml")):
        entries += (yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}).get("samples") or []
    return entries


@pytest.fixture(scope="module")
def sample_cards() -> list[tuple[str, list[dict]]]:
    engine = Engine.load()
    out = []
    for entry in _entries():
        payload = json.loads((SAMPLES / entry["file"]).read_text(encoding="utf-8"))
        hook = entry.get("hook") if entry["file"].startswith("bundles/") else None
        evaluation = engine.evaluate(payload, hook=hook, now=str(entry["now"]))
        out.append((entry["file"], evaluation.response.to_json()["cards"]))
    return out


def test_samples_were_evaluated(sample_cards) -> None:
    assert len(sample_cards) == len(_entries()) > 50
    assert sum(len(cards) for _, cards in sample_cards) > 50


def test_every_card_of_every_sample_conforms(sample_cards) -> None:
    bad = []
    for name, cards in sample_cards:
        for card in cards:
            recommended = [s["label"] for s in card.get("suggestions", []) if s.get("isRecommended")]
            if card.get("suggestions") and card.get("selectionBehavior") not in ("at-most-one", "any"):
                bad.append((name, card["source"]["topic"]["code"], "suggestions without selectionBehavior"))
            if len(recommended) > 1 and card.get("selectionBehavior") != "any":
                bad.append((name, card["source"]["topic"]["code"], recommended))
    assert bad == []


def test_every_sample_lists_its_cards_in_catalogue_order(sample_cards) -> None:
    for name, cards in sample_cards:
        keys = [(INDICATOR_ORDER[c["indicator"]], 0 if is_safety_rule(c["source"]["topic"]["code"]) else 1)
                for c in cards]
        assert keys == sorted(keys), (name, [(c["indicator"], c["source"]["topic"]["code"]) for c in cards])
