"""Compile a validated RuleSet into durable_rules rulesets: definition passes, then the rules.

How a patient is matched, all of it by durable_rules:

1. **Definition passes.** Shared definitions (``sir_context``, ``diabetes``, ``pregnant``...) are
   inferred first, in layers: a definition whose body uses no other definition is in layer 0, one
   that uses layer-0 definitions is in layer 1, and so on. Each layer is one durable_rules ruleset;
   asserting the patient fact into it tells which of its definitions hold, and their truth is added
   to the fact as booleans (``def_<name>``) before the next layer.
2. **Rule pass.** Each card of each rule is one condition over facts and ``def_*`` booleans:
   ``hook in rule.hooks (and card.hooks)`` AND ``rule.when`` AND ``card.when``.

Why layers: durable_rules refuses nested and/or trees beyond 31 expressions per beta node
(``MAX_SEQUENCE_EXPRESSIONS 32``, error 113 "Could not create ruleset"), so every condition is expanded
into disjunctive normal form and each conjunction becomes its own single-pattern durable rule
(``<rule>#<card>#<clause>``; flat conjunctions of any length compile into its alpha network). Inlining
definitions would multiply those alternatives (``not sir_context`` alone expands to hundreds);
inferring them once per layer keeps every card to a handful of clauses.

Also by design: only single-pattern rules (the two-pattern catch-all crashed ``delete_state``,
durable-rules-notes.md); a catch-all rule per ruleset so a fact is never "not handled"
(MessageNotHandledException); ``$ex``/``$nex`` never emitted (a ``$nex`` rule loops forever inside
``assert_fact`` on 2.0.28, measured here), which is why every number has a ``<name>_known`` companion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cds.rules.conditions import All, AnyOf, Compare, Node, references
from cds.rules.model import LoadedRule

__all__ = [
    "CATCH_ALL",
    "MAX_CLAUSES",
    "PATIENT_KIND",
    "compile_definition_layers",
    "compile_rules",
    "definition_layers",
    "referenced_facts",
    "rule_condition",
    "to_dnf",
]

CATCH_ALL = "__evaluated__"
PATIENT_KIND = "sir-patient"
MAX_CLAUSES = 2048  # per card or definition; beyond this a condition is too tangled to review
# durable_rules 2.0.28 rejects a fact with more than ~252 properties (error 302, measured here); each
# pass asserts only the facts its rules test, and no pass may test more than this many.
MAX_FACTS_PER_PASS = 240


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
            clauses = [c for c in (_simplify(a + b) for a in clauses for b in child_clauses) if c is not None]
            if len(clauses) > MAX_CLAUSES:
                raise ValueError(f"condition expands to more than {MAX_CLAUSES} alternatives")
        return clauses
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


def definition_layers(definitions: dict[str, Node]) -> list[list[str]]:
    """Definitions grouped so each only refers to definitions of earlier layers."""
    layer: dict[str, int] = {}

    def depth(name: str, trail: tuple[str, ...] = ()) -> int:
        if name in layer:
            return layer[name]
        if name in trail:
            raise ValueError(f"definitions refer to each other in a cycle: {' -> '.join(trail + (name,))}")
        used = references(definitions[name]) & definitions.keys()
        layer[name] = 1 + max((depth(d, trail + (name,)) for d in used), default=-1)
        return layer[name]

    for name in definitions:
        depth(name)
    count = 1 + max(layer.values(), default=-1)
    return [sorted(n for n, level in layer.items() if level == i) for i in range(count)]


def referenced_facts(ruleset: dict[str, Any]) -> set[str]:
    """Fact names the rules of one compiled durable_rules ruleset test."""
    names: set[str] = set()
    for rule in ruleset.values():
        for pattern in rule["all"]:
            for leaf in pattern["m"].get("$and", [pattern["m"]]):
                key = next(iter(leaf))
                names.add(next(iter(leaf[key])) if key.startswith("$") else key)
    names.discard("kind")
    if len(names) > MAX_FACTS_PER_PASS:
        raise ValueError(
            f"one pass tests {len(names)} facts; durable_rules accepts at most {MAX_FACTS_PER_PASS} per fact"
        )
    return names


def _single_pattern_rules(
    prefix: str, node: Node, action: Callable[[Any], None]
) -> dict[str, dict[str, Any]]:
    rules = {}
    for number, clause in enumerate(to_dnf(node.compile())):
        rules[f"{prefix}#{number}"] = {"all": [{"m": {"$and": [{"kind": PATIENT_KIND}, *clause]}}], "run": action}
    return rules


def compile_definition_layers(
    definitions: dict[str, Node], action_for: Callable[[str], Callable[[Any], None]], noop: Callable[[Any], None]
) -> list[tuple[list[str], dict[str, Any]]]:
    """One durable_rules definition per layer: (definition names of the layer, ruleset JSON)."""
    compiled = []
    for names in definition_layers(definitions):
        ruleset: dict[str, Any] = {}
        for name in names:
            ruleset.update(_single_pattern_rules(f"def:{name}", definitions[name], action_for(name)))
        ruleset[CATCH_ALL] = {"all": [{"m": {"kind": PATIENT_KIND}}], "run": noop}
        compiled.append((names, ruleset))
    return compiled


def compile_rules(
    rules: list[LoadedRule],
    action_for: Callable[[str, int], Callable[[Any], None]],
    noop: Callable[[Any], None],
    suggestion_action_for: Callable[[str, int, int], Callable[[Any], None]] | None = None,
) -> dict[str, Any]:
    """The durable_rules JSON definition (with Python callables as actions) for these rules.

    A suggestion with its own ``when`` gets rules of its own (``<rule>#<card>#s<n>#<clause>``): it is
    offered only when the engine matched that condition too.
    """
    definition: dict[str, Any] = {}
    for rule in rules:
        for index in range(len(rule.spec.cards)):
            definition.update(
                _single_pattern_rules(f"{rule.spec.id}#{index}", rule_condition(rule, index), action_for(rule.spec.id, index))
            )
            conditions = rule.suggestion_conditions[index] if rule.suggestion_conditions else []
            for number, condition in enumerate(conditions):
                if condition is not None and suggestion_action_for is not None:
                    definition.update(_single_pattern_rules(
                        f"{rule.spec.id}#{index}#s{number}", condition, suggestion_action_for(rule.spec.id, index, number)
                    ))
    definition[CATCH_ALL] = {"all": [{"m": {"kind": PATIENT_KIND}}], "run": noop}
    return definition
