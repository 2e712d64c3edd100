"""Compile a validated RuleSet into one durable_rules ruleset.

Each card of each rule becomes one durable_rules rule whose single pattern matches the patient fact:
``hook in rule.hooks (and card.hooks)`` AND ``rule.when`` AND ``card.when``. Only single-pattern
rules are generated: the two-pattern catch-all crashed ``delete_state`` (durable-rules-notes.md), and
one flat fact per evaluation needs no joins. A catch-all rule (``__evaluated__``) matches every patient
fact so a batch is never "not handled" (MessageNotHandledException). ``$ex``/``$nex`` are never
emitted: a ``$nex`` rule loops forever inside ``assert_fact`` on durable_rules 2.0.28 (measured here),
which is why every number carries an explicit ``<name>_known`` companion instead.

Each card's condition is expanded into disjunctive normal form and every conjunction becomes its own
durable_rules rule (``<rule>#<card>#<clause>``): durable_rules refuses nested and/or trees beyond 31
expressions per beta node (``MAX_SEQUENCE_EXPRESSIONS 32``, error 113 "Could not create ruleset"),
which real clinical conditions exceed, while flat conjunctions of any length compile into its alpha
network. A card fires when any of its clauses matches; results are de-duplicated per card.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cds.rules.conditions import All, AnyOf, Compare, Node
from cds.rules.loader import LoadedRule

__all__ = ["CATCH_ALL", "MAX_CLAUSES", "PATIENT_KIND", "compile_rules", "rule_condition", "to_dnf"]

CATCH_ALL = "__evaluated__"
PATIENT_KIND = "sir-patient"
MAX_CLAUSES = 2048  # per card; beyond this a condition is too tangled to review (validator error)


def _is_combinator(expression: dict[str, Any], key: str) -> bool:
    return len(expression) == 1 and key in expression


def to_dnf(expression: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Expand a compiled $and/$or tree into a list of conjunctions of leaf tests.

    Clauses that test one boolean/string fact for two different values are dropped (they can never
    match), and repeated leaves within a clause are merged.
    """
    if _is_combinator(expression, "$and"):
        clauses: list[list[dict[str, Any]]] = [[]]
        for child in expression["$and"]:
            child_clauses = to_dnf(child)
            clauses = [a + b for a in clauses for b in child_clauses]
            if len(clauses) > MAX_CLAUSES:
                raise ValueError(f"condition expands to more than {MAX_CLAUSES} alternatives")
        return [c for c in (_simplify(c) for c in clauses) if c is not None]
    if _is_combinator(expression, "$or"):
        result = [clause for child in expression["$or"] for clause in to_dnf(child)]
        if len(result) > MAX_CLAUSES:
            raise ValueError(f"condition expands to more than {MAX_CLAUSES} alternatives")
        return result
    return [[expression]]


def _simplify(clause: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    equalities: dict[str, Any] = {}
    unique: list[dict[str, Any]] = []
    seen: set[str] = set()
    for leaf in clause:
        key = next(iter(leaf))
        if not key.startswith("$"):
            if key in equalities and equalities[key] != leaf[key]:
                return None
            equalities[key] = leaf[key]
        fingerprint = repr(sorted(leaf.items()))
        if fingerprint not in seen:
            seen.add(fingerprint)
            unique.append(leaf)
    return unique


def _hooks_condition(hooks: list[str]) -> Node:
    return AnyOf([Compare("hook", "eq", hook, "string", hook) for hook in hooks])


def rule_condition(rule: LoadedRule, card_index: int) -> Node:
    """The full condition of one card: hooks, the rule's ``when`` and the card's ``when``."""
    spec = rule.spec
    card = spec.cards[card_index]
    parts: list[Node] = [_hooks_condition(list(card.hooks or spec.hooks))]
    if rule.when is not None:
        parts.append(rule.when)
    condition = rule.card_conditions[card_index]
    if condition is not None:
        parts.append(condition)
    return All(parts)


def compile_rules(
    rules: list[LoadedRule], action_for: Callable[[str, int], Callable[[Any], None]], noop: Callable[[Any], None]
) -> dict[str, Any]:
    """The durable_rules JSON definition (with Python callables as actions) for these rules."""
    definition: dict[str, Any] = {}
    for rule in rules:
        for index in range(len(rule.spec.cards)):
            action = action_for(rule.spec.id, index)
            for number, clause in enumerate(to_dnf(rule_condition(rule, index).compile())):
                definition[f"{rule.spec.id}#{index}#{number}"] = {
                    "all": [{"m": {"$and": [{"kind": PATIENT_KIND}, *clause]}}],
                    "run": action,
                }
    definition[CATCH_ALL] = {"all": [{"m": {"kind": PATIENT_KIND}}], "run": noop}
    return definition
