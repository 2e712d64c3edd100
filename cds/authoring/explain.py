"""Explain one evaluation: the facts as the engine saw them and, per rule, why it fired or not.

Why: a clinician who asks "why no card?" and an informatician whose test fails need the same answer:
the patient's value (unit, date, source resource) against the rule's threshold, for the *first*
condition that failed. Truth values come from :meth:`cds.rules.conditions.Node.evaluate`, the
documented mirror of the compiled durable_rules condition; every explanation is also checked
against what the engine actually matched, and a disagreement is printed, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds.engine import Engine, Evaluation
from cds.facts.build import fact_key
from cds.facts.models import PatientFacts, fmt_number
from cds.rules.compile import rule_condition
from cds.rules.conditions import All, AnyOf, Compare, Node, Not, Ref, Undecided
from cds.rules.model import LoadedRule, RuleSet

__all__ = ["CardCheck", "Explanation", "RuleExplanation", "explain", "explain_evaluation", "render_text", "why_not"]

_CODED_SUFFIXES = ("active_days", "active", "history", "days", "drafted", "any", "allergy")


@dataclass
class CardCheck:
    """One card of a rule: did its whole condition (hooks + rule + card) hold, and if not, why."""

    index: int
    indicator: str
    hooks: list[str]
    holds: bool
    matched_by_engine: bool
    reason: str | None

    @property
    def disagrees(self) -> bool:
        return self.holds != self.matched_by_engine


@dataclass
class RuleExplanation:
    rule_id: str
    title: str
    version: str
    status: str
    ran: bool
    fired: bool
    chosen: int | None = None
    summary: str | None = None
    cards: list[CardCheck] = field(default_factory=list)
    note: str | None = None


@dataclass
class Explanation:
    facts: PatientFacts
    evaluation: Evaluation
    ruleset: RuleSet
    include_drafts: bool
    rules: list[RuleExplanation]


# -- provenance: where a fact's value came from ------------------------------------------------------

def _coded_items(fact: str, facts: PatientFacts, ruleset: RuleSet) -> list[Any] | None:
    for vs_id, vs in ruleset.valuesets.items():
        for suffix in _CODED_SUFFIXES:
            if fact == fact_key(vs_id, suffix):
                if suffix == "allergy":
                    return facts.allergies.get(vs_id, [])
                source = {"condition": facts.conditions, "medication": facts.medications,
                          "procedure": facts.procedures, "device": facts.devices}.get(vs.kind, {})
                return source.get(vs_id, [])
    return None


def provenance(fact: str, facts: PatientFacts, ruleset: RuleSet) -> str | None:
    """Where ``fact``'s value came from: the lab value with date and resource, or the coded items."""
    base = fact.removesuffix("_known")
    for suffix in ("_low_inclusive", "_high_inclusive", "_low", "_high", "_unreadable", "_recorded"):
        if base.endswith(suffix):
            lab_name = base.removesuffix(suffix)
            lab_name = "alt" if lab_name == "alt_x_uln" else lab_name
            if lab_name in facts.unreadable:
                bad = facts.unreadable[lab_name]
                return f"{bad} [{bad.reason}], {bad.resource}"
            if lab_name in facts.labs:
                return f"{facts.labs[lab_name].describe()}, {facts.labs[lab_name].resource}"
    if base in facts.labs:
        lab = facts.labs[base]
        return f"{lab.describe()}, {lab.resource}"
    for suffix in ("_last_days", "_last"):
        if base.endswith(suffix) and base.removesuffix(suffix) in facts.last_labs:
            lab = facts.last_labs[base.removesuffix(suffix)]
            return f"latest ever {lab.describe()}, {lab.resource}"
    if base.startswith("insulin_tdd") or base == "insulin_u_per_kg":
        parts = list(facts.insulin.items) + [f"unknown: {r}" for r in facts.insulin.unknown_reasons]
        return "; ".join(parts) or None
    if base == "bmi_z":
        return facts.bmi_source
    items = _coded_items(base, facts, ruleset)
    if items:
        return "; ".join(f"{item.describe()} {item.resource}" for item in items)
    return None


def tdd_summary(insulin: Any) -> str:
    """The insulin total daily dose as the cards show it (pathways.md 1: whole units, U/kg to one decimal).

    A TDD with an unquantifiable dosage is not "unknown" when part of it is known: it is "at least N"
    (``insulin_tdd_at_least``), which decides "TDD > T" but never "TDD <= T" (catalogue v3 change 7).
    """
    def units(value: float | None) -> str:
        return "unknown" if value is None else f"{round(value)} U/day"

    def per_kg(value: float | None) -> str:
        return "U/kg/day unknown (no weight in 12 months)" if value is None else f"{value:.1f} U/kg/day"

    if insulin.tdd is not None:
        text = f"TDD {units(insulin.tdd)}, {per_kg(insulin.per_kg)}"
    elif insulin.tdd_at_least is not None:
        text = (f"TDD at least {units(insulin.tdd_at_least)} (incomplete: a dosage could not be quantified), "
                + ("at least " if insulin.per_kg_at_least is not None else "") + per_kg(insulin.per_kg_at_least))
    else:
        text = "TDD unknown (no dosage could be quantified)"
    drafts = "unknown" if insulin.tdd_with_drafts is None else units(insulin.tdd_with_drafts)
    return f"{text}; with drafted orders {drafts}"


def _unit(fact: str, ruleset: RuleSet) -> str:
    spec = ruleset.catalog.get(fact)
    return f" {spec.unit}" if spec is not None and spec.unit else ""


def _show(fact: str, values: dict[str, Any], ruleset: RuleSet) -> str:
    value = values.get(fact)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return fmt_number(value) + _unit(fact, ruleset)
    return str(value)


def _lab_of(fact: str) -> str:
    return "alt" if fact == "alt_x_uln" else fact


def _undecided_reason(node: Compare, facts: PatientFacts) -> str | None:
    """Why a record of a bounded lab cannot decide ``node``: unreadable, or a straddling bound."""
    lab = _lab_of(node.fact)
    if lab in facts.unreadable:
        bad = facts.unreadable[lab]
        return f"{bad} ({bad.reason}; {bad.resource}): cannot decide {node.describe()}"
    value = facts.labs.get(lab)
    if value is not None and value.is_bound:
        return f"{value.describe()} ({value.resource}) is a bound that does not decide {node.describe()}"
    return None


def _compare_reason(node: Compare, values: dict[str, Any], facts: PatientFacts, ruleset: RuleSet) -> str:
    if node.fact == "hook":
        if node.op == "ne":
            return f"hook is {values.get('hook')}, this branch is for the other hooks (not {node.shown})"
        return f"hook is {values.get('hook')}, this card is for {node.shown}"
    if node.bounded and node.kind == "number":
        undecided = _undecided_reason(node, facts)
        if undecided is not None and not node.evaluate_negated(values)[0]:
            return undecided
        if undecided is not None:  # a bound that decides the comparison false
            return f"{node.describe()} is false: {undecided.split(' is a bound')[0]}"
    if values.get(node.fact) is None:
        text = f"{node.label or node.fact} is not known (needed: {node.describe()})"
        if node.fact.startswith("insulin_") and facts.insulin.unknown_reasons:
            text += "; " + "; ".join(facts.insulin.unknown_reasons)
        if node.fact in ("insulin_tdd", "insulin_tdd_with_drafts", "insulin_u_per_kg", "insulin_u_per_kg_at_least") and (
                facts.insulin.tdd_at_least is not None):
            # a lower bound is known: say so (it decides "> T" rules, never "<= T")
            text += f"; {tdd_summary(facts.insulin)}"
        stale = facts.last_labs.get(node.fact)
        if stale is not None:
            text += f"; latest ever is {stale.describe()} ({stale.resource}), outside the look-back"
        ignored = [i for i in facts.ignored if i.fact == node.fact]
        for item in ignored:
            text += f"; ignored {item.resource}: {item.reason}"
        return text
    if node.kind == "bool":
        where = provenance(node.fact, facts, ruleset)
        positive = bool(node.value) == (node.op == "eq")
        if positive:
            return f"{node.label or node.fact}: none recorded"
        return f"{node.describe()} is false: found {where or node.fact}"
    where = provenance(node.fact, facts, ruleset)
    return (f"{node.fact} = {_show(node.fact, values, ruleset)}{f' ({where})' if where else ''}; "
            f"needed {node.describe()}")


def _evidence(node: Node, values: dict[str, Any], facts: PatientFacts, ruleset: RuleSet) -> str:
    """Why a node *holds* (for explaining a failed ``not``)."""
    if isinstance(node, Compare):
        where = provenance(node.fact, facts, ruleset)
        if node.kind == "bool":
            return f"{node.describe()}{f' ({where})' if where else ''}"
        return f"{node.fact} = {_show(node.fact, values, ruleset)}{f' ({where})' if where else ''}"
    if isinstance(node, Ref):
        return f"{node.name}: {_evidence(node.inner, values, facts, ruleset)}"
    if isinstance(node, Not):
        return f"not ({node.item.describe()})"
    if isinstance(node, AnyOf):
        for item in node.items:
            if item.evaluate(values)[0]:
                return _evidence(item, values, facts, ruleset)
    if isinstance(node, All):
        return " and ".join(_evidence(item, values, facts, ruleset) for item in node.items)
    return node.describe()


def why_not(node: Node, values: dict[str, Any], facts: PatientFacts, ruleset: RuleSet) -> str | None:
    """The first condition that fails, with the patient's value against the threshold (None if it holds)."""
    ok, _ = node.evaluate(values)
    if ok:
        return None
    if isinstance(node, All):
        for item in node.items:
            reason = why_not(item, values, facts, ruleset)
            if reason is not None:
                return reason
    if isinstance(node, AnyOf):
        reasons = [why_not(item, values, facts, ruleset) or item.describe() for item in node.items]
        if len(reasons) == 1:
            return reasons[0]
        return "none of: " + " | ".join(f"({r})" for r in reasons)
    if isinstance(node, Ref):
        return f"{node.name}: {why_not(node.inner, values, facts, ruleset)}"
    if isinstance(node, Not):
        if not node.item.evaluate(values)[0]:
            # neither holds: a value that could not be read (or a straddling bound) cannot rule it out
            reason = _cannot_rule_out(node.item, values, facts)
            return f"must not hold, and cannot be ruled out: {reason}"
        return f"must not hold, but {_evidence(node.item, values, facts, ruleset)}"
    if isinstance(node, Compare):
        return _compare_reason(node, values, facts, ruleset)
    if isinstance(node, Undecided):
        lab = _lab_of(node.compare.fact)
        shown = facts.labs.get(lab)
        return (f"{node.describe()} is false: "
                + (f"{shown.describe()} decides it" if shown is not None else f"no {lab} recorded in the look-back"))
    return node.evaluate(values)[1]


def _cannot_rule_out(node: Node, values: dict[str, Any], facts: PatientFacts) -> str:
    """The first leaf under ``node`` that is neither true nor false."""
    if isinstance(node, Compare):
        return _undecided_reason(node, facts) or node.evaluate_negated(values)[1] or node.describe()
    if isinstance(node, (All, AnyOf)):
        for item in node.items:
            if not item.evaluate(values)[0] and not item.evaluate_negated(values)[0]:
                return _cannot_rule_out(item, values, facts)
    if isinstance(node, Not):
        return _cannot_rule_out(node.item, values, facts)
    return node.evaluate_negated(values)[1] or node.describe()


# -- the explanation ---------------------------------------------------------------------------------

def _rule_explanation(rule: LoadedRule, engine: Engine, evaluation: Evaluation) -> RuleExplanation:
    spec = rule.spec
    ran = any(r.spec.id == spec.id for r in engine.rules)
    result = RuleExplanation(rule_id=spec.id, title=spec.title, version=spec.version, status=spec.status, ran=ran,
                             fired=spec.id in evaluation.chosen, chosen=evaluation.chosen.get(spec.id))
    if not ran:
        result.note = ("retired: never runs" if spec.status == "retired"
                       else "draft: not run (drafts run only when explicitly enabled, e.g. --include-drafts)")
    if evaluation.facts.deceased:
        result.note = "patient is deceased: no rule runs"
    values = evaluation.facts.values
    matched = set(evaluation.matched.get(spec.id, []))
    for index, card in enumerate(spec.cards):
        node = rule_condition(rule, index)
        holds, _ = node.evaluate(values)
        reason = None if holds else why_not(node, values, evaluation.facts, engine.ruleset)
        result.cards.append(CardCheck(index=index, indicator=card.indicator, hooks=list(card.hooks or spec.hooks),
                                      holds=holds, matched_by_engine=index in matched if ran else holds,
                                      reason=reason))
    if result.fired:
        for shown in evaluation.cards:
            if shown.source.topic is not None and shown.source.topic.code == spec.id:
                result.summary = shown.summary
    return result


def explain_evaluation(engine: Engine, evaluation: Evaluation, *, rule: str | None = None) -> Explanation:
    rules = [r for r in engine.ruleset.rules if rule is None or r.spec.id == rule]
    if rule is not None and not rules:
        raise KeyError(f"no rule {rule!r} in {engine.ruleset.directory} "
                       f"(rules: {', '.join(r.spec.id for r in engine.ruleset.rules)})")
    return Explanation(facts=evaluation.facts, evaluation=evaluation, ruleset=engine.ruleset,
                       include_drafts=engine.include_drafts,
                       rules=[_rule_explanation(r, engine, evaluation) for r in rules])


def explain(engine: Engine, payload: Any, *, hook: str | None = None, now: Any = None,
            rule: str | None = None) -> Explanation:
    """Evaluate ``payload`` with the real engine and explain the result."""
    evaluation = engine.evaluate(payload, hook=hook, now=now)
    return explain_evaluation(engine, evaluation, rule=rule)


# -- text rendering ----------------------------------------------------------------------------------

def _facts_lines(facts: PatientFacts, ruleset: RuleSet, *, all_facts: bool) -> list[str]:
    out = ["FACTS"]
    age = f"{fmt_number(facts.age_years)} a" if facts.age_years is not None else "unknown"
    out.append(f"  patient {facts.patient_id or '(no id)'}: age {age}, sex {facts.sex}"
               + (", DECEASED" if facts.deceased else ""))
    if facts.labs:
        out.append("  labs (recent, canonical units):")
        width = max(len(n) for n in facts.labs)
        for name, lab in sorted(facts.labs.items()):
            out.append(f"    {name:<{width}}  {lab.describe()}  [{lab.resource}]")
    stale = {n: v for n, v in facts.last_labs.items() if n not in facts.labs or facts.labs[n].resource != v.resource}
    if stale:
        out.append("  labs not used as current (latest readable ever: outside the look-back, or older than an "
                   "unreadable record; rules see them as <name>_last only):")
        for name, lab in sorted(stale.items()):
            out.append(f"    {name}  {lab.describe()}  [{lab.resource}]")
    for title, group in (("conditions", facts.conditions), ("medications", facts.medications),
                         ("allergies", facts.allergies), ("referrals/procedures", facts.procedures),
                         ("devices", facts.devices)):
        if any(group.values()):
            out.append(f"  {title}:")
            for vs_id, items in sorted(group.items()):
                for item in items:
                    out.append(f"    {vs_id}: {item.describe()}  [{item.resource}]")
    insulin = facts.insulin
    if insulin.items or insulin.unknown_reasons or insulin.tdd is not None:
        out.append(f"  insulin: {tdd_summary(insulin)}")
        out += [f"    {item}" for item in insulin.items]
        out += [f"    unknown: {reason}" for reason in insulin.unknown_reasons]
    if facts.bmi_z is not None:
        out.append(f"  BMI-for-age z-score: {fmt_number(facts.bmi_z)} ({facts.bmi_source})")
    if facts.unreadable:
        out.append("  could not be read (a record exists; never reported as missing):")
        out += [f"    {name}  {item}  [{item.resource}]: {item.reason}" for name, item in sorted(facts.unreadable.items())]
    if facts.ignored:
        out.append("  values ignored:")
        out += [f"    {i.fact}  [{i.resource}]: {i.reason}" for i in facts.ignored]
    if facts.notes:
        out.append("  notes:")
        out += [f"    {note}" for note in facts.notes]
    shown = {k: v for k, v in sorted(facts.values.items())
             if all_facts or (not k.endswith("_known") and v is not False)}
    out.append("  flat facts the rules match" + (" (all):" if all_facts else " (true or measured; others false/unknown):"))
    out += [f"    {k} = {_show(k, facts.values, ruleset)}" for k, v in shown.items()]
    return out


def render_text(explanation: Explanation, *, all_facts: bool = False) -> str:
    facts, ruleset = explanation.facts, explanation.ruleset
    out = [f"Patient {facts.patient_id or '(no id)'} | hook {facts.hook} | now {facts.now.strftime('%Y-%m-%dT%H:%M:%SZ')}",
           f"Rulesets {ruleset.directory} (digest {ruleset.digest}); drafts "
           + ("included" if explanation.include_drafts else "excluded"), ""]
    out += _facts_lines(facts, ruleset, all_facts=all_facts)
    out += ["", "RULES"]
    for rule in explanation.rules:
        head = f"  {rule.rule_id} {rule.version} ({rule.status}): "
        if rule.fired:
            card = rule.cards[rule.chosen or 0]
            out.append(head + f"FIRED card {card.index} ({card.indicator}): {rule.summary}")
        else:
            out.append(head + ("not fired" + (f" - {rule.note}" if rule.note else "")))
        for card in rule.cards:
            mark = "holds" if card.holds else "fails"
            line = f"    card {card.index} {card.indicator} [{', '.join(card.hooks)}]: {mark}"
            if card.reason:
                line += f": {card.reason}"
            if card.disagrees and rule.ran and not facts.deceased:
                line += ("  !! the engine " + ("matched" if card.matched_by_engine else "did not match")
                         + " this card: explanation and engine disagree, please report")
            out.append(line)
    return "\n".join(out)
