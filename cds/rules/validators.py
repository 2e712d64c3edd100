"""Checks on a loaded RuleSet beyond the schema: templates, suggestions, card text length, engine limits.

Each check returns :class:`Issue` objects with file and line, so ``cds rules validate`` can list every
problem at once. The service refuses to serve a RuleSet with any error-level issue.

Nobody runs these on load (they render every template and build every suggested FHIR resource, which
``cds evaluate`` need not pay for): the caller asks, through
:func:`cds.authoring.gate.validate_ruleset`, which adds the rule-test checks of :mod:`cds.authoring`.
This module depends on the rule model, the card renderer and the compiler only, never on authoring.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from jinja2 import TemplateSyntaxError, meta

from cds._exceptions import CDSError
from cds.cards.conformance import spec_problem
from cds.cards.render import TEMPLATE_NAMES, create_resource, parse_template, template_context
from cds.facts.models import PatientFacts
from cds.rules.fingerprint import check_fingerprints
from cds.rules.model import Issue, LoadedRule, RuleSet
from cds.rules.usage import rule_usage

__all__ = ["DETAIL_MAX_CHARS", "DETAIL_MAX_LINES", "DETAIL_MAX_LINE_CHARS", "SUMMARY_LIMIT", "VALIDATORS",
           "detail_line_estimate", "run_validators"]

SUMMARY_LIMIT = 140  # CDS Hooks 2.0: summary SHALL be < 140 characters
_VALUE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_BLOCK = re.compile(r"\{%.*?%\}", re.DOTALL)
# Longest plausible rendering of one {{ ... }} in a summary: a number through |num ("1234.56"), or
# anything else, e.g. a lab value "1234.56 mL/min/{1.73_m2} (98 mL/min) on 2026-01-03".
NUMBER_BUDGET = 8
VALUE_BUDGET = 40
# Card detail budget (issue 12: an EHR side panel holds about 8 short lines): the decisive values with
# dates, the one-sentence reason, the next step. Longer text goes to the card's ``more``.
DETAIL_MAX_LINES = 8
DETAIL_MAX_LINE_CHARS = 200  # one short line: a value with its date and unit, or one sentence
DETAIL_MAX_CHARS = 900
_ANY_TAG = re.compile(r"\{%-?\s*(\w+).*?%\}| $")
_SLICE = re.compile(r"\[\s*:\s*(\d+)\s*\]\s*(?:\|[^%]*)?-?%\}$")


def _template_issues(rule: LoadedRule, template: str, location: tuple[str | int, ...]) -> tuple[list[Issue], Any]:
    """Syntax errors and unknown names of one template, and its parsed form (None if it does not parse).

    The parsed form is handed on to :func:`_attribute_issues`: parsing is the costly part of checking
    ~220 templates, so each is parsed once.
    """
    where = (str(rule.path), rule.source.line_of(location), rule.spec.id)
    try:
        ast = parse_template(template)
    except TemplateSyntaxError as exc:
        return [Issue(where[0], where[1] + max(exc.lineno - 1, 0), where[2], f"template syntax: {exc.message}")], None
    unknown = meta.find_undeclared_variables(ast) - TEMPLATE_NAMES
    return [Issue(*where, f"unknown template variable {name!r} (known: {', '.join(sorted(TEMPLATE_NAMES))})")
            for name in sorted(unknown)], ast


# Extra keys the fact builder adds beside the value sets (cds/facts/build.py).
_EXTRA_CONDITION_KEYS = {"nyha", "lipodystrophy-hiv", "insulin-receptor-antibody-result"}


def _known_attributes(ruleset: RuleSet, rule: LoadedRule) -> dict[str, set[str]]:
    """What ``<name>.<attribute>`` may follow each template name (typos print "not recorded" otherwise)."""
    def ids(*kinds: str) -> set[str]:
        return {vs_id for vs_id, vs in ruleset.valuesets.items() if vs.kind in kinds}

    labs = set(ruleset.labs.definitions)
    return {
        "fact": set(ruleset.catalog),
        "lab": labs,
        "last": labs,
        "t": set(ruleset.definitions.thresholds) | set(rule.spec.thresholds),
        "conditions": ids("condition") | _EXTRA_CONDITION_KEYS,
        "medications": ids("medication"),
        "allergies": ids("medication"),
        "drafts": ids("medication", "device"),
        "procedures": ids("procedure"),
        "devices": ids("device"),
        "patient": {"id", "age", "age_years", "sex"},
        "rule": {"id", "title", "version"},
    }


def _attribute_issues(rule: LoadedRule, ast: Any, location: tuple[str | int, ...],
                      known: dict[str, set[str]]) -> list[Issue]:
    from jinja2 import nodes

    issues = []
    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name in known:
            allowed = known[node.node.name]
            attribute = node.attr
            if attribute not in allowed and attribute.replace("_", "-") not in allowed:
                issues.append(Issue(str(rule.path), rule.source.line_of(location) + max(node.lineno - 1, 0),
                                    rule.spec.id, f"unknown name {node.node.name}.{attribute} in a template"))
    return issues


def check_templates(ruleset: RuleSet) -> list[Issue]:
    issues: list[Issue] = []
    for rule in ruleset.rules:
        known = _known_attributes(ruleset, rule)
        templates: list[tuple[str, tuple[str | int, ...]]] = []
        for i, card in enumerate(rule.spec.cards):
            templates += [(card.summary, ("cards", i, "summary")), (card.detail, ("cards", i, "detail"))]
            if card.more:
                templates.append((card.more, ("cards", i, "more")))
            for j, suggestion in enumerate(card.suggestions):
                templates.append((suggestion.label, ("cards", i, "suggestions", j, "label")))
        for template, location in templates:
            found, ast = _template_issues(rule, template, location)
            issues += found
            if ast is not None:  # a syntax error is reported above
                issues += _attribute_issues(rule, ast, location, known)
    return issues


def check_summary_length(ruleset: RuleSet) -> list[Issue]:
    """Static text plus a budget per expression must stay under 140 characters."""
    issues: list[Issue] = []
    for rule in ruleset.rules:
        for i, card in enumerate(rule.spec.cards):
            text = " ".join(card.summary.split())
            static = _BLOCK.sub("", _VALUE.sub("", text))
            values = _VALUE.findall(text)
            budget = sum(NUMBER_BUDGET if "|num" in v.replace(" ", "") else VALUE_BUDGET for v in values)
            worst = len(static) + budget
            if worst >= SUMMARY_LIMIT:
                issues.append(Issue(str(rule.path), rule.source.line_of(("cards", i, "summary")), rule.spec.id,
                                    f"summary can reach {worst} characters ({len(static)} of text + {len(values)} "
                                    f"values worth {budget}); CDS Hooks requires < {SUMMARY_LIMIT} (branches of "
                                    "{% if %} are counted together: shorten the text)"))
    return issues


def check_suggestion_targets(ruleset: RuleSet) -> list[Issue]:
    issues: list[Issue] = []
    for rule in ruleset.rules:
        for i, card in enumerate(rule.spec.cards):
            for j, suggestion in enumerate(card.suggestions):
                for k, action in enumerate(suggestion.actions):
                    target = action.delete_drafts or action.stop_active
                    loc = ("cards", i, "suggestions", j, "actions", k)
                    if target is not None:
                        vs = ruleset.valuesets.get(target)
                        if vs is None or vs.kind != "medication":
                            issues.append(Issue(str(rule.path), rule.source.line_of(loc), rule.spec.id,
                                                f"{target!r} is not a medication value set"))
    return issues


def check_selection_behavior(ruleset: RuleSet) -> list[Issue]:
    """Several recommended suggestions need ``selection: any`` (CDS Hooks 2.0; cds/cards/conformance.py)."""
    issues: list[Issue] = []
    for rule in ruleset.rules:
        for i, card in enumerate(rule.spec.cards):
            problem = spec_problem(((s.label, s.recommended) for s in card.suggestions), card.selection)
            if problem is not None:
                issues.append(Issue(str(rule.path), rule.source.line_of(("cards", i, "suggestions")), rule.spec.id,
                                    f"card {i}: {problem}"))
    return issues


def check_resources_render(ruleset: RuleSet) -> list[Issue]:
    """Render every 'create' template on an empty patient and validate it as FHIR R4."""
    facts = PatientFacts(patient_id="example", hook="patient-view", now=datetime(2026, 1, 1, tzinfo=UTC))
    issues: list[Issue] = []
    for rule in ruleset.rules:
        context = template_context(facts, {**ruleset.definitions.thresholds, **rule.spec.thresholds}, rule.spec)
        for i, card in enumerate(rule.spec.cards):
            for j, suggestion in enumerate(card.suggestions):
                for k, action in enumerate(suggestion.actions):
                    if action.create is None:
                        continue
                    loc = ("cards", i, "suggestions", j, "actions", k, "create")
                    try:
                        create_resource(action.create, facts, context, f"rule {rule.spec.id}")
                    except CDSError as exc:
                        issues.append(Issue(str(rule.path), rule.source.line_of(loc), rule.spec.id,
                                            f"suggested resource is not valid FHIR R4: {exc}"))
    return issues


def check_definitions_used(ruleset: RuleSet) -> list[Issue]:
    used = set().union(*(r.used_definitions for r in ruleset.rules)) if ruleset.rules else set()
    path = ruleset.directory / "definitions.yaml"
    return [Issue(str(path), 1, None, f"definition {name!r} is used by no rule", severity="warning")
            for name in ruleset.definitions.definitions if name not in used and not _used_by_definition(ruleset, name)]


def _used_by_definition(ruleset: RuleSet, name: str) -> bool:
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    return any(pattern.search(repr(d.when)) for other, d in ruleset.definitions.definitions.items() if other != name)


def check_compiles(ruleset: RuleSet) -> list[Issue]:
    """Everything must compile the way the Engine compiles it (compile.py), within durable_rules' limits.

    Checked per card, per conditional suggestion and per definition (at most MAX_CLAUSES alternatives
    each), then per engine pass (at most MAX_FACTS_PER_PASS facts tested). Without this check the
    loader would accept rules the Engine then cannot build, and the service would fail at start-up or
    on reload instead of at ``cds rules validate``.
    """
    from cds.rules.compile import (
        MAX_CLAUSES,
        compile_definition_layers,
        compile_rules,
        referenced_facts,
        rule_condition,
        to_dnf,
    )

    advice = (f"the engine cannot compile it (limit {MAX_CLAUSES} alternatives): move a repeated group of "
              "conditions into a named definition in definitions.yaml (a definition costs one test wherever "
              "it is used, negated or not), or split the card")
    issues: list[Issue] = []
    for rule in ruleset.rules:
        for i, _card in enumerate(rule.spec.cards):
            try:
                to_dnf(rule_condition(rule, i).compile())
            except ValueError as exc:
                loc = ("cards", i, "when") if rule.card_conditions[i] is not None else ("when",)
                issues.append(Issue(str(rule.path), rule.source.line_of(loc), rule.spec.id, f"card {i}: {exc}; {advice}"))
            for j, condition in enumerate(rule.suggestion_conditions[i] if rule.suggestion_conditions else []):
                if condition is None:
                    continue
                try:
                    to_dnf(condition.compile())
                except ValueError as exc:
                    issues.append(Issue(str(rule.path), rule.source.line_of(("cards", i, "suggestions", j, "when")),
                                        rule.spec.id, f"card {i} suggestion {j}: {exc}; {advice}"))
    definitions_path = str(ruleset.directory / "definitions.yaml")
    for name, node in ruleset.definition_nodes.items():
        try:
            to_dnf(node.compile())
        except ValueError as exc:
            issues.append(Issue(definitions_path, 1, None, f"definition {name!r}: {exc}; split it into smaller definitions"))
    if issues:
        return issues

    def ignore(_c: object) -> None:
        return None

    def action_for(*_names: object) -> Callable[[object], None]:
        return ignore

    try:
        passes = [definition for _names, definition
                  in compile_definition_layers(ruleset.definition_nodes, action_for, ignore)]
        passes.append(compile_rules(ruleset.rules, action_for, ignore, action_for))
        for definition in passes:
            referenced_facts(definition)
    except ValueError as exc:
        issues.append(Issue(str(ruleset.directory), 1, None,
                            f"{exc}: durable_rules cannot take it; move conditions into definitions (each "
                            "definition pass and the rule pass are counted separately)"))
    return issues


def detail_line_estimate(template: str) -> int:
    """Most lines a ``detail`` template can print, read from its block structure.

    A text line counts once; inside a ``for`` loop as many times as the loop's ``[:n]`` slice
    allows (twice when it is not sliced); of ``if``/``elif``/``else`` branches only the longest
    counts. An upper-bound estimate for ``cds rules validate``; the rendered cards of every sample
    are measured by the test suite.
    """
    # a frame: [kind, multiplier, branch totals]; the root is one "if" with one branch
    stack: list[list[Any]] = [["root", 1, [0]]]

    def close() -> None:
        kind, mult, branches = stack.pop()
        stack[-1][2][-1] += (max(branches) if kind == "if" else branches[-1]) * mult

    for line in template.splitlines():
        counted = False
        position = 0
        for match in _ANY_TAG.finditer(line + " "):
            if not counted and line[position:match.start()].strip():
                stack[-1][2][-1] += 1
                counted = True
            position = match.end()
            if match.group(0) == " ":
                continue
            word = (match.group(1) or "").strip()
            if word == "for":
                sliced = _SLICE.search(match.group(0))
                stack.append(["for", int(sliced.group(1)) if sliced else 2, [0]])
            elif word == "if":
                stack.append(["if", 1, [0]])
            elif word in ("elif", "else") and stack[-1][0] == "if":
                stack[-1][2].append(0)
            elif word in ("endfor", "endif") and len(stack) > 1:
                close()
    while len(stack) > 1:
        close()
    return int(stack[0][2][0])


def check_detail_length(ruleset: RuleSet) -> list[Issue]:
    """A card's ``detail`` must fit the EHR panel: at most DETAIL_MAX_LINES lines (estimated from the
    template; the rendered cards of every sample and rule test are measured by the test suite)."""
    issues: list[Issue] = []
    for rule in ruleset.rules:
        for i, card in enumerate(rule.spec.cards):
            estimate = detail_line_estimate(card.detail)
            if estimate > DETAIL_MAX_LINES:
                issues.append(Issue(str(rule.path), rule.source.line_of(("cards", i, "detail")), rule.spec.id,
                                    f"card {i}: detail can print {estimate} lines (at most {DETAIL_MAX_LINES}): keep "
                                    "the decisive values, the reason and the next step; move the rest to `more`"))
    return issues


# Facts whose use means a source attribute (HTI-1 (b)(11)(iv)(A)(10), (11), (13)) is used.
_ATTRIBUTE_FACTS: dict[str, set[str]] = {
    "age": {"date_of_birth"},
    "bmi_z": {"date_of_birth", "sex"},  # BMI-for-age: age picks the child reference, which is sex-specific
    "sex": {"sex"},
    "pregnancy_observation": {"health_status_assessments"},  # USCDI Health Status Assessments: pregnancy status
    "pregnancy_observation_unreadable": {"health_status_assessments"},
}


def check_source_attributes(ruleset: RuleSet) -> list[Issue]:
    """A rule that decides on age, sex or a pregnancy-status assessment must say so in its attributes.

    The schema makes every attribute present; this makes "used: false" true: the conditions are
    walked (through the definitions they name) and each fact tied to an HTI-1 data element is
    checked against the declaration, so a new age condition cannot leave "date of birth: not used".
    """
    issues: list[Issue] = []
    for rule in ruleset.rules:
        facts = rule_usage(ruleset, rule).facts
        facts |= {f.removesuffix("_known") for f in facts}
        needed: dict[str, set[str]] = {}
        for fact, elements in _ATTRIBUTE_FACTS.items():
            if fact in facts:
                for element in elements:
                    needed.setdefault(element, set()).add(fact)
        uses = rule.spec.source_attributes.uses
        for element, by in sorted(needed.items()):
            if not getattr(uses, element).used:
                loc = ("source_attributes", "uses", element, "used")
                issues.append(Issue(str(rule.path), rule.source.line_of(loc), rule.spec.id,
                                    f"source_attributes.uses.{element}: says not used, but the conditions read "
                                    f"{', '.join(sorted(by))}; set used: true and say how"))
    return issues


def check_review_dates(ruleset: RuleSet, today: date | None = None) -> list[Issue]:
    """A passed ``next_review`` is a warning: the rule still runs, but its sign-off is out of date."""
    today = today or datetime.now(UTC).date()
    issues: list[Issue] = []
    for rule in ruleset.rules:
        approval = rule.spec.approval
        if approval is not None and date.fromisoformat(approval.next_review) < today:
            issues.append(Issue(str(rule.path), rule.source.line_of(("approval", "next_review")), rule.spec.id,
                                f"approval.next_review {approval.next_review} has passed: review the rule and "
                                "record the new approval", severity="warning"))
    return issues


VALIDATORS: list[Callable[[RuleSet], list[Issue]]] = [
    check_templates,
    check_summary_length,
    check_detail_length,
    check_suggestion_targets,
    check_selection_behavior,
    check_resources_render,
    check_definitions_used,
    check_compiles,
    check_source_attributes,
    check_review_dates,
    check_fingerprints,
]


def run_validators(ruleset: RuleSet) -> list[Issue]:
    """Every check above; the rule-test checks are authoring's (:func:`cds.authoring.gate.validate_ruleset`)."""
    issues: list[Issue] = []
    for validator in VALIDATORS:
        issues += validator(ruleset)
    return issues


