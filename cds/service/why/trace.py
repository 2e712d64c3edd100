"""The condition trace of one card in words: each condition, whether it held, and on which value.

Why its own walk and not ``cds explain``'s text: ``cds explain`` says *why a card did not fire* (the
first failing condition). A clinician looking at a card that did fire needs the opposite: every
condition that held, with the value, unit and date it held on. Both read the same things: the
Python mirror of the compiled condition (:meth:`cds.rules.conditions.Node.evaluate`, checked
against durable_rules on every sample by ``tests/test_explain_agrees_with_engine.py``) and the
wording and provenance of :mod:`cds.authoring.explain` (used as is for a condition that failed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds.authoring.explain import provenance, why_not
from cds.facts.models import PatientFacts, fmt_number
from cds.rules.compile import rule_condition
from cds.rules.conditions import All, AnyOf, Compare, Node, Not, Ref, Undecided
from cds.rules.model import LoadedRule, RuleSet
from cds.rules.schema import INDICATOR_RANK

__all__ = ["CardTrace", "Threshold", "TraceLine", "card_traces"]

_MAX_LINES = 160  # a shared definition can be large; the page stays readable


@dataclass
class TraceLine:
    depth: int
    holds: bool
    text: str


@dataclass
class Threshold:
    """A number comparison the rule makes on a fact: drawn on that fact's chart."""

    fact: str
    op: str
    value: float
    shown: str
    holds: bool
    where: str  # "this card" or the shared definition it comes from


@dataclass
class CardTrace:
    index: int
    indicator: str
    holds: bool
    lines: list[TraceLine] = field(default_factory=list)


_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "=", "ne": "!="}


def _value_text(fact: str, values: dict[str, Any], ruleset: RuleSet) -> str:
    value = values.get(fact)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        spec = ruleset.catalog.get(fact)
        return fmt_number(value) + (f" {spec.unit}" if spec is not None and spec.unit else "")
    return "not known" if value is None else str(value)


def _held(node: Compare, values: dict[str, Any], facts: PatientFacts, ruleset: RuleSet) -> str:
    """A comparison that held, said with the value it held on and where that value came from."""
    if node.fact == "hook":
        return f"hook is {values.get('hook')} ({node.describe()})"
    where = provenance(node.fact, facts, ruleset)
    if node.kind == "bool":
        return f"{node.describe()}" + (f": {where}" if where and bool(node.value) == (node.op == "eq") else "")
    if node.bounded and node.fact in facts.labs:
        return f"{node.describe()}: {facts.labs[node.fact].describe()}"
    return f"{node.describe()}: {node.label or node.fact} = {_value_text(node.fact, values, ruleset)}" + (
        f" ({where})" if where else "")


def _walk(node: Node, values: dict[str, Any], facts: PatientFacts, ruleset: RuleSet, depth: int,
          out: list[TraceLine], thresholds: list[Threshold], where: str) -> None:
    if len(out) >= _MAX_LINES:
        return
    holds = node.evaluate(values)[0]
    if isinstance(node, All):
        if depth > 0:
            out.append(TraceLine(depth, holds, "all of:"))
        for item in node.items:  # the card's top level (hooks, rule, card) is one flat list
            _walk(item, values, facts, ruleset, depth + 1 if depth > 0 else 0, out, thresholds, where)
        return
    if isinstance(node, AnyOf):
        out.append(TraceLine(depth, holds, "any of (one is enough):"))
        for item in node.items:
            _walk(item, values, facts, ruleset, depth + 1, out, thresholds, where)
        return
    if isinstance(node, Ref):
        out.append(TraceLine(depth, holds, f"{node.name} (shared definition)"))
        _walk(node.inner, values, facts, ruleset, depth + 1, out, thresholds, node.name)
        return
    if isinstance(node, Not):
        _collect(node.item, values, thresholds, where)
        text = (f"not ({node.item.describe()}): ruled out" if holds
                else why_not(node, values, facts, ruleset) or f"not ({node.item.describe()})")
        out.append(TraceLine(depth, holds, text))
        return
    if isinstance(node, Compare):
        _collect(node, values, thresholds, where)
        text = _held(node, values, facts, ruleset) if holds else (why_not(node, values, facts, ruleset) or node.describe())
        out.append(TraceLine(depth, holds, text))
        return
    if isinstance(node, Undecided):
        _collect(node.compare, values, thresholds, where)
    text = node.describe() if holds else (why_not(node, values, facts, ruleset) or node.describe())
    out.append(TraceLine(depth, holds, text))


def _collect(node: Node, values: dict[str, Any], thresholds: list[Threshold], where: str) -> None:
    """Every number comparison under ``node`` (thresholds to draw), with whether it holds."""
    if isinstance(node, Compare):
        if node.kind == "number" and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            thresholds.append(Threshold(fact=node.fact, op=_OPS.get(node.op, node.op), value=float(node.value),
                                        shown=node.shown, holds=node.evaluate(values)[0], where=where))
    elif isinstance(node, (All, AnyOf)):
        for item in node.items:
            _collect(item, values, thresholds, where)
    elif isinstance(node, Not):
        _collect(node.item, values, thresholds, where)
    elif isinstance(node, Ref):
        _collect(node.inner, values, thresholds, node.name)
    elif isinstance(node, Undecided):
        _collect(node.compare, values, thresholds, where)


def card_traces(rule: LoadedRule, facts: PatientFacts, ruleset: RuleSet) -> tuple[list[CardTrace], list[Threshold], int | None]:
    """Every card of ``rule`` traced, the thresholds it compares, and the card the engine would show.

    The shown card is the highest-indicator card whose condition holds (ties: the first listed), as
    in :meth:`cds.engine.Engine.evaluate_record`; the page compares it with the card that was answered.
    """
    values = {**facts.values, **facts.definitions}
    traces: list[CardTrace] = []
    thresholds: list[Threshold] = []
    for index, card in enumerate(rule.spec.cards):
        node = rule_condition(rule, index)
        trace = CardTrace(index=index, indicator=card.indicator, holds=node.evaluate(values)[0])
        _walk(node, values, facts, ruleset, 0, trace.lines, thresholds, "this card")
        traces.append(trace)
    held = [t for t in traces if t.holds]
    chosen = max(held, key=lambda t: (INDICATOR_RANK[t.indicator], -t.index)).index if held else None
    return traces, thresholds, chosen
