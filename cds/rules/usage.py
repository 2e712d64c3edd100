"""What one rule really depends on: facts, labs, value sets, thresholds and definitions.

Why a module of its own: the loader records what each *parser* saw, and the shared parser of
``definitions.yaml`` has seen every shared definition, so ``LoadedRule.used_valuesets`` lists every
value set any definition names (a one-threshold rule listed 13 thresholds and 22 value sets in the
catalogue). Here the rule's own condition trees are walked (through the definitions they refer to)
and its card templates read for ``t.<threshold>``, so the catalogue, the criterion-4 inputs and the
source-attribute checks name only what the rule uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jinja2 import TemplateSyntaxError, nodes

from cds.cards.render import parse_template
from cds.facts.build import fact_key
from cds.rules.conditions import All, AnyOf, Compare, Node, Not, Ref, Undecided

if TYPE_CHECKING:
    from cds.rules.model import LoadedRule, RuleSet

__all__ = ["RuleUsage", "fact_owners", "rule_usage"]

_VS_SUFFIXES = ("active", "history", "days", "active_days", "drafted", "any", "allergy")
_LAB_SUFFIXES = ("", "_last", "_last_days", "_low", "_high", "_low_inclusive", "_high_inclusive",
                 "_unreadable", "_recorded")


@dataclass
class RuleUsage:
    """The dependencies of one rule, each a sorted-able set of names."""

    facts: set[str] = field(default_factory=set)
    labs: set[str] = field(default_factory=set)
    valuesets: set[str] = field(default_factory=set)
    thresholds: set[str] = field(default_factory=set)  # in conditions or card text
    definitions: set[str] = field(default_factory=set)


def _walk(node: Node | None, usage: RuleUsage, thresholds: set[str]) -> None:
    if node is None:
        return
    if isinstance(node, Ref):
        usage.definitions.add(node.name)
        _walk(node.inner, usage, thresholds)
    elif isinstance(node, (All, AnyOf)):
        for item in node.items:
            _walk(item, usage, thresholds)
    elif isinstance(node, Not):
        _walk(node.item, usage, thresholds)
    elif isinstance(node, Undecided):
        _walk(node.compare, usage, thresholds)
    elif isinstance(node, Compare):
        usage.facts.add(node.fact)
        name = node.shown.split(" (", 1)[0].strip()
        if name in thresholds:
            usage.thresholds.add(name)
    else:  # a node kind added later: at least its facts
        usage.facts |= node.facts()


def fact_owners(ruleset: RuleSet) -> dict[str, tuple[str, str]]:
    """fact name (and its ``_known`` twin) -> ("lab"|"valueset", name)."""
    owners: dict[str, tuple[str, str]] = {}
    for lab in ruleset.labs.definitions:
        for suffix in _LAB_SUFFIXES:
            owners[f"{lab}{suffix}"] = ("lab", lab)
    for vs_id in ruleset.valuesets:
        for suffix in _VS_SUFFIXES:
            owners[fact_key(vs_id, suffix)] = ("valueset", vs_id)
    owners.update({f"{name}_known": owner for name, owner in list(owners.items())})
    return owners


def _template_thresholds(template: str) -> set[str]:
    try:
        ast = parse_template(template)
    except TemplateSyntaxError:
        return set()  # reported by the template validator
    return {n.attr for n in ast.find_all(nodes.Getattr)
            if isinstance(n.node, nodes.Name) and n.node.name == "t"}


def rule_usage(ruleset: RuleSet, rule: LoadedRule) -> RuleUsage:
    """Walk the rule's conditions (through definitions) and card templates."""
    usage = RuleUsage()
    thresholds = set(ruleset.definitions.thresholds) | set(rule.spec.thresholds)
    for node in [rule.when, *rule.card_conditions, *[n for card in rule.suggestion_conditions for n in card]]:
        _walk(node, usage, thresholds)
    owners = fact_owners(ruleset)
    for fact in usage.facts:
        kind, name = owners.get(fact, ("", ""))
        if kind == "lab":
            usage.labs.add(name)
        elif kind == "valueset":
            usage.valuesets.add(name)
    for lab in usage.labs:
        usage.valuesets |= set(ruleset.labs.definitions[lab].valuesets)
    for card in rule.spec.cards:
        texts = [card.summary, card.detail, *(s.label for s in card.suggestions)]
        for text in texts:
            usage.thresholds |= _template_thresholds(text) & thresholds
        for suggestion in card.suggestions:
            for action in suggestion.actions:
                for vs_id in (action.delete_drafts, action.stop_active):
                    if vs_id:
                        usage.valuesets.add(vs_id)
    return usage
