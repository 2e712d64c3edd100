"""A suggestion with its own ``when`` is offered only when durable_rules matched that condition too.

sir-suspected offers leptin, adiponectin and triglyceride tests only when no value is in their
look-back window: ordering a test that was just done is noise.
"""

from __future__ import annotations

from tests.core.conftest import BMI, FASTING_INSULIN, bundle, obs, patient

LEPTIN = "21365-2"


def _labels(result, rule_id: str) -> list[str]:
    card = next(c for c in result.cards if c.source.topic.code == rule_id)
    return [s.label for s in card.suggestions or []]


def test_lab_tests_are_offered_when_no_recent_value(evaluate) -> None:
    result = evaluate(bundle(obs(FASTING_INSULIN, 38.0, "uIU/mL", 20), obs(BMI, 22.5, "kg/m2", 20), pt=patient(40)))
    labels = _labels(result, "sir-suspected")
    assert any(label.startswith("Order serum leptin") for label in labels)
    assert any(label.startswith("Order serum adiponectin") for label in labels)


def test_a_recent_leptin_withholds_only_the_leptin_test(evaluate) -> None:
    result = evaluate(bundle(obs(FASTING_INSULIN, 38.0, "uIU/mL", 20), obs(BMI, 22.5, "kg/m2", 20),
                             obs(LEPTIN, 3.1, "ng/mL", 30), pt=patient(40)))
    labels = _labels(result, "sir-suspected")
    assert not any(label.startswith("Order serum leptin") for label in labels)
    assert any(label.startswith("Order serum adiponectin") for label in labels)
    assert any(label.startswith("Refer") for label in labels)


def test_a_stale_leptin_is_offered_again_with_its_last_value(evaluate) -> None:
    result = evaluate(bundle(obs(FASTING_INSULIN, 38.0, "uIU/mL", 20), obs(BMI, 22.5, "kg/m2", 20),
                             obs(LEPTIN, 3.1, "ng/mL", 800), pt=patient(40)))
    labels = _labels(result, "sir-suspected")
    assert any(label.startswith("Order serum leptin (last 3.1 ng/mL") for label in labels), labels


def test_suggestion_uuids_are_unique_per_card(evaluate) -> None:
    """Feedback names accepted suggestions by uuid: two cards must never share one."""
    payload = bundle(obs(FASTING_INSULIN, 38.0, "uIU/mL", 20), obs(BMI, 22.5, "kg/m2", 20), pt=patient(40))
    first, second = evaluate(payload), evaluate(payload)
    ids = [s.uuid for result in (first, second) for card in result.cards for s in card.suggestions or []]
    assert ids and len(ids) == len(set(ids))
