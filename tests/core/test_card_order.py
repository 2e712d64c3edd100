"""Card order (pathways.md v3.0 change 19): critical, warning, info; within one indicator, safety
rules (hypoglycaemia-deescalation, *-safety, *-renal) first, then the ruleset's rule order."""

from __future__ import annotations

from cds.cards.models import Card, Coding, Source
from cds.cards.order import card_sort_key, is_safety_rule
from tests.core.conftest import ALT, BMI, NYHA, SNOMED, bundle, cond, dosage, medreq, obs, patient


def _card(rule_id: str, indicator: str) -> Card:
    return Card(summary=f"{rule_id} card", indicator=indicator,
                source=Source(label="test", topic=Coding(system="urn:test", code=rule_id)))


def test_safety_rule_names() -> None:
    assert is_safety_rule("hypoglycaemia-deescalation")
    assert is_safety_rule("pioglitazone-safety") and is_safety_rule("metformin-renal")
    assert is_safety_rule("lipodystrophy-lipid-safety")
    assert not is_safety_rule("safety-data-needed")  # a "needs data" card, not a safety rule
    assert not is_safety_rule("sir-suspected") and not is_safety_rule("metformin-start")


def test_sort_key_orders_indicator_then_safety_then_rule_position() -> None:
    cards = [(_card("sir-case-finding", "info"), 0), (_card("safety-data-needed", "warning"), 1),
             (_card("u500-safety", "warning"), 5), (_card("type-b-suspected", "warning"), 2),
             (_card("hypoglycaemia-deescalation", "warning"), 9), (_card("pioglitazone-safety", "critical"), 7),
             (_card("metformin-renal", "info"), 8)]
    ordered = [c.source.topic.code for c, pos in sorted(cards, key=lambda item: card_sort_key(*item))]
    assert ordered == ["pioglitazone-safety", "u500-safety", "hypoglycaemia-deescalation", "safety-data-needed",
                       "type-b-suspected", "metformin-renal", "sir-case-finding"]


def test_engine_puts_a_safety_warning_before_an_earlier_rule_s_warning(engine, evaluate) -> None:
    """type-b-immunosuppression comes before u500-safety in rule order; the safety card must still lead."""
    payload = bundle(
        cond(None, text="Familial partial lipodystrophy (Dunnigan)"),   # info cards
        obs(NYHA, None, None, 30, valueCodeableConcept={"coding": [{"system": SNOMED, "code": "420913000"}]}),
        medreq("317573", display="pioglitazone 15 MG Oral Tablet"),                   # critical (NYHA III)
        medreq("1731315", display="insulin regular, human 500 UNT/ML Pen Injector",
               dosages=[dosage(120, frequency=3, period=1, period_unit="d")]),           # u500-safety warning
        medreq("311041", display="insulin glargine 100 UNT/ML", dosages=[dosage(30, frequency=1, period=1, period_unit="d")]),
        cond("237652003", display="Insulin resistance - type B"),                    # type-b-immunosuppression warning
        obs(BMI, 24, "kg/m2", 20),
        obs(ALT, 30, "U/L", 20),  # active pioglitazone needs a recent ALT, else safety-data-needed warns too
        pt=patient(45),
    )
    evaluation = evaluate(payload)
    shown = [(c.indicator, c.source.topic.code) for c in evaluation.response.cards]
    ids = [rule for _, rule in shown]
    assert ids[0] == "pioglitazone-safety" and shown[0][0] == "critical", shown
    assert shown[1] == ("warning", "u500-safety"), shown
    warnings = [rule for indicator, rule in shown if indicator == "warning"]
    assert warnings.index("u500-safety") < warnings.index("type-b-immunosuppression"), shown
    assert "lipodystrophy-monitoring" in ids, shown
    # the test means something: by rule order alone type-b-immunosuppression would have come first
    assert engine._order["type-b-immunosuppression"] < engine._order["u500-safety"]
    ranks = [{"critical": 0, "warning": 1, "info": 2}[indicator] for indicator, _ in shown]
    assert ranks == sorted(ranks), shown
