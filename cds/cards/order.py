"""The order of the cards in a response (pathways.md v3.0 section 2, change 19).

Cards are ordered critical, then warning, then info. Within one indicator, safety rules come first:
``hypoglycaemia-deescalation`` and every ``*-safety`` / ``*-renal`` rule, because a de-escalation or
a stop must be read before a suggestion to start or investigate something. Ties keep the ruleset's
rule order (``rule_position``), so the order is stable from one call to the next.

The engine calls :func:`card_sort_key`; it lives here, beside the card models, so the ordering policy
is one small function that can be tested on its own and does not depend on how the engine evaluates.
"""

from __future__ import annotations

from cds.cards.models import Card

__all__ = ["INDICATOR_ORDER", "SAFETY_RULES", "card_sort_key", "is_safety_rule"]

INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}
SAFETY_RULES = frozenset({"hypoglycaemia-deescalation"})
_SAFETY_SUFFIXES = ("-safety", "-renal")


def is_safety_rule(rule_id: str) -> bool:
    """hypoglycaemia-deescalation, and any rule id ending in -safety or -renal."""
    return rule_id in SAFETY_RULES or rule_id.endswith(_SAFETY_SUFFIXES)


def card_sort_key(card: Card, rule_position: int) -> tuple[int, int, int]:
    """Sort key: indicator (critical first), then safety rules first, then the rule's position."""
    rule_id = card.source.topic.code if card.source.topic is not None else ""
    return (INDICATOR_ORDER[card.indicator], 0 if is_safety_rule(rule_id) else 1, rule_position)
