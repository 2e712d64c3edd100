"""The Python reading of every condition agrees with what durable_rules matched.

durable_rules does the matching; ``Node.evaluate`` exists only to explain results (``cds explain``,
the catalogue). If the two ever disagree, an explanation would mislead a clinician, so every sample
patient and every Synthea patient is checked, card by card and definition by definition.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cds.authoring.explain import explain_evaluation
from cds.engine import Engine
from cds.rules.conditions import definition_fact

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea-r4"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load()


def _cases() -> list[tuple[str, Path, str | None, str]]:
    cases = []
    for manifest in sorted((ROOT / "fhir_samples").glob("manifest-*.yaml")):
        for entry in (yaml.safe_load(manifest.read_text()) or {}).get("samples") or []:
            path = ROOT / "fhir_samples" / entry["file"]
            hook = entry.get("hook") if entry["file"].startswith("bundles/") else None
            cases.append((entry["file"], path, hook, str(entry["now"])))
    for path in sorted(SYNTHEA.glob("*.json")):
        for hook in ("patient-view", "order-sign"):
            cases.append((f"synthea/{path.stem[:24]}/{hook}", path, hook, "2026-11-01T00:00:00Z"))
    return cases


CASES = _cases()


def test_there_is_something_to_compare() -> None:
    assert len(CASES) >= 80


@pytest.mark.parametrize(("label", "path", "hook", "now"), CASES, ids=[c[0] for c in CASES])
def test_python_reading_matches_durable_rules(engine: Engine, label: str, path: Path, hook: str | None, now: str) -> None:
    evaluation = engine.evaluate(json.loads(path.read_text()), hook=hook, now=now)
    if evaluation.facts.deceased:
        pytest.skip("deceased: nothing is matched")
    explanation = explain_evaluation(engine, evaluation)
    disagreements = [
        f"{rule.rule_id} card {card.index}: python {card.holds}, durable_rules {card.matched_by_engine}"
        for rule in explanation.rules if rule.ran for card in rule.cards if card.disagrees
    ]
    values = {**evaluation.facts.values, **evaluation.facts.definitions}
    for rule in engine.rules:
        for index, conditions in enumerate(rule.suggestion_conditions):
            for number, condition in enumerate(conditions):
                if condition is not None:
                    python_truth, _ = condition.evaluate(values)
                    engine_truth = (rule.spec.id, index, number) in evaluation.offered
                    if python_truth != engine_truth:
                        disagreements.append(f"{rule.spec.id} card {index} suggestion {number}: "
                                             f"python {python_truth}, durable_rules {engine_truth}")
    for name, node in engine.ruleset.definition_nodes.items():
        python_truth, _ = node.evaluate(values)
        engine_truth = evaluation.facts.definitions[definition_fact(name)]
        if python_truth != engine_truth:
            disagreements.append(f"definition {name}: python {python_truth}, durable_rules {engine_truth}")
    assert disagreements == []
