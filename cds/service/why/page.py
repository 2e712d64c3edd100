"""Build the "why this card" page from a stored evaluation: facts, trace, charts, evidence, the rule.

Why rebuild the facts instead of storing them: the facts, the series and the trace are derived from
the completed request by the same code the engine ran (``cds.facts``), so storing the request alone
is enough and the page can never show a value the engine did not see. No FHIR server is contacted.
The rules are the ones served now; when they changed since the call (another ruleset digest, another
rule version) the page says so, and when the stored values do not reproduce the card with them it
says that too rather than explaining a different card.

Runs in a worker thread (it is CPU work: about 50-300 ms plus matplotlib's first import).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from cds.service.html import environment
from cds.service.why.store import LINK_LABEL, Snapshot

__all__ = ["render_error", "render_page"]

#: the rule file fields shown in their own sections; any other field (e.g. source attributes and the
#: FDA criterion-4 basis added to the rule schema) is shown generically under "About this rule"
_KNOWN_FIELDS = {"id", "title", "version", "status", "description", "hooks", "source", "evidence", "thresholds",
                 "when", "cards", "links", "override_reasons", "limitations", "author", "changelog"}
# the labs the SIR pathways read, in the order a clinician expects them (others follow)
_LAB_ORDER = ["fasting_insulin", "triglycerides", "hba1c", "egfr", "alt", "bmi", "fasting_glucose",
              "lowest_glucose", "c_peptide", "leptin", "adiponectin", "weight", "lvef"]


_MATCHERS: dict[str, Any] = {}  # ruleset digest -> ConceptMatcher (memoised concept look-ups)


def _matcher(ruleset: Any) -> Any:
    from cds.facts.matching import ConceptMatcher

    matcher = _MATCHERS.get(ruleset.digest)
    if matcher is None:
        _MATCHERS.clear()  # the rules served now only
        matcher = _MATCHERS[ruleset.digest] = ConceptMatcher(ruleset.valuesets)
    return matcher


def markdown_lite(text: str | None) -> Markup:
    """Card detail Markdown as the EHR shows it: paragraphs, bullet lists, **bold** (everything escaped).

    Lines that continue a paragraph or a list item are joined to it, as Markdown does.
    """
    if not text:
        return Markup("")
    blocks: list[tuple[str, list[str]]] = []  # ("p" | "li", lines)
    for line in str(text).splitlines():
        stripped = line.strip()
        if not stripped:
            blocks.append(("", []))
            continue
        if stripped.startswith(("- ", "* ")):
            blocks.append(("li", [stripped[2:]]))
        elif blocks and blocks[-1][0] in ("p", "li"):
            blocks[-1][1].append(stripped)
        else:
            blocks.append(("p", [stripped]))
    html: list[str] = []
    in_list = False
    for kind, lines in blocks:
        if kind != "li" and in_list:
            html.append("</ul>")
            in_list = False
        if not kind:
            continue
        body = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(" ".join(lines))))
        if kind == "li":
            if not in_list:
                html.append("<ul>")
                in_list = True
            html.append(f"<li>{body}</li>")
        else:
            html.append(f"<p>{body}</p>")
    if in_list:
        html.append("</ul>")
    return Markup("\n".join(html))


@dataclass
class Chart:
    title: str
    svg: Markup
    used: str | None = None  # the value the rule used, in words
    thresholds: list[str] = field(default_factory=list)
    not_counted: list[tuple[str, str, str]] = field(default_factory=list)
    values: list[tuple[str, str, str]] = field(default_factory=list)  # (date, value, note)


def _lab_names(rule: Any, ruleset: Any) -> list[str]:
    """The labs a rule's conditions read (its own and its shared definitions'), pathway order first."""
    from cds.rules.compile import rule_condition

    facts: set[str] = set()
    for index in range(len(rule.spec.cards)):
        facts |= rule_condition(rule, index).facts()
    names = []
    for name in ruleset.labs.definitions:
        if any(f == name or f.startswith(name + "_") for f in facts) or (name == "alt" and any(
                f.startswith("alt_") for f in facts)):
            names.append(name)
    return sorted(names, key=lambda n: (_LAB_ORDER.index(n) if n in _LAB_ORDER else len(_LAB_ORDER), n))


def _generic(value: Any) -> Any:
    """A rule-file field as plain data for the generic renderer (pydantic models become dicts)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    return value


def _rule_attributes(spec: Any) -> list[tuple[str, list[tuple[str, Any]]]]:
    """The rule's source attributes, FDA criterion-4 basis and approval as (section, [(label, value)]).

    The rule model's own ``transparency()`` gives the sections in the regulation's order and wording
    (the catalogue shows the same); any other field a rule file gains later is shown generically.
    """
    sections: list[tuple[str, list[tuple[str, Any]]]] = []
    shown = set(_KNOWN_FIELDS)
    transparency = getattr(spec, "transparency", None)
    if callable(transparency):
        sections = [(title, list(rows)) for title, rows in transparency()]
        shown |= {"source_attributes", "fda_criterion_4", "approval"}
    for name in type(spec).model_fields:
        value = getattr(spec, name, None)
        if name in shown or value in (None, [], {}, ""):
            continue
        sections.append((name.replace("_", " ").capitalize(), [("", _generic(value))]))
    return sections


def _charts(rule: Any, ruleset: Any, record: Any, facts: Any, thresholds: list[Any]) -> list[Chart]:
    from cds.facts.build import ALT_DEFAULT_ULN
    from cds.service.why.charts import dose_chart, lab_chart
    from cds.service.why.series import lab_series

    charts: list[Chart] = []
    for series in lab_series(record, ruleset.labs, facts, _lab_names(rule, ruleset)):
        scale: dict[str, float] = {}
        related = [t for t in thresholds if t.fact == series.name]
        if series.name == "alt":
            used = series.used
            uln = used.value.reference_high if used is not None and used.value.reference_high else ALT_DEFAULT_ULN
            scale["alt_x_uln"] = uln
            related += [t for t in thresholds if t.fact == "alt_x_uln"]
        chart = Chart(title=series.title, svg=Markup(lab_chart(series, related, facts.now, scale=scale)))
        if series.used is not None:
            chart.used = series.used.value.describe()
        chart.thresholds = sorted({f"{t.op} {t.shown} ({t.where})" for t in related})
        chart.not_counted = series.not_counted
        chart.values = [(p.value.date.date().isoformat(), f"{p.value.shown} {series.unit}",
                         "used by the rule" if p.used else ("" if p.in_lookback else "outside the look-back"))
                        for p in series.points]
        charts.append(chart)
    insulin = facts.insulin
    for prefix, title, unit, value, lower in (
            ("insulin_tdd", "Insulin total daily dose", "U/day", insulin.tdd, insulin.tdd_at_least),
            ("insulin_u_per_kg", "Insulin dose per kg", "U/kg/day", insulin.per_kg, insulin.per_kg_at_least)):
        related = [t for t in thresholds if t.fact.startswith(prefix)]
        if not related:
            continue
        shown, at_least = (value, False) if value is not None else (lower, lower is not None)
        chart = Chart(title=title, svg=Markup(dose_chart(title, unit, shown, at_least, related)))
        chart.used = ("unknown" if shown is None else f"{'at least ' if at_least else ''}{shown:.1f} {unit}")
        chart.thresholds = sorted({f"{t.op} {t.shown} ({t.where})" for t in related})
        chart.values = [("", item, "") for item in insulin.items] + [("", f"unknown: {r}", "") for r in
                                                                      insulin.unknown_reasons]
        charts.append(chart)
    return charts


def _more(rule: Any, index: int, facts: Any, ruleset: Any) -> str | None:
    """The card's longer explanation (the rule's ``more`` text), if the card model has one."""
    try:
        from cds.cards.render import render_more
    except ImportError:  # a card model without the longer text
        return None
    try:
        return render_more(rule.spec, index, facts, global_thresholds=dict(ruleset.definitions.thresholds))
    except Exception as exc:  # noqa: BLE001 - the rest of the page still explains the card
        return f"(the longer explanation could not be rendered: {type(exc).__name__})"


def _evidence(rule: Any, facts: Any, lab_names: list[str]) -> list[tuple[str, str, str]]:
    """(what, value with date, source resource) for the recorded data the rule's conditions read."""
    rows: list[tuple[str, str, str]] = []
    for name in lab_names:
        lab = facts.labs.get(name)
        if lab is not None:
            rows.append((lab.name.replace("_", " "), lab.describe(), lab.resource))
        elif name in facts.unreadable:
            bad = facts.unreadable[name]
            rows.append((name.replace("_", " "), f"{bad.describe()}: {bad.reason}", bad.resource))
        elif name in facts.last_labs:
            old = facts.last_labs[name]
            rows.append((name.replace("_", " "), f"latest ever {old.describe()} (outside the look-back)", old.resource))
    for vs_id in sorted(getattr(rule, "used_valuesets", set()) or set()):
        for group in (facts.conditions, facts.medications, facts.allergies, facts.procedures, facts.devices):
            for item in group.get(vs_id, []):
                rows.append((vs_id.replace("-", " "), item.describe(), item.resource))
    return rows


def render_page(ruleset: Any, snapshot: Snapshot, card_uuid: str, *, served_digest: str) -> str:
    """The HTML page for one card of a stored evaluation."""
    from cds.fhir.ingest import ingest

    card = snapshot.card(card_uuid) or {}
    topic = (card.get("source") or {}).get("topic") or {}
    rule_id, card_version = topic.get("code"), topic.get("version")
    notes: list[str] = []
    if snapshot.ruleset_digest and snapshot.ruleset_digest != served_digest:
        notes.append(f"The rules were changed since this call (rulesets {snapshot.ruleset_digest} then, "
                     f"{served_digest} now); the conditions below are the rules served now.")
    context: dict[str, Any] = {
        "card": card, "detail": markdown_lite(card.get("detail")), "now": snapshot.now, "rule": None,
        "rule_id": rule_id, "card_version": card_version, "charts": [], "traces": [], "chosen": None,
        "evidence": [], "attributes": [], "notes": notes, "patient": None, "ignored": [], "more": Markup(""), "suggestions": [
            s.get("label") for s in card.get("suggestions") or []],
        "links": [link for link in card.get("links") or [] if link.get("label") != LINK_LABEL],
    }
    try:
        rule = ruleset.rule(rule_id)
    except KeyError:
        notes.append(f"Rule {rule_id!r} is not served any more: only the card as answered is shown.")
        return environment().get_template("why.html").render(**context)
    from cds.facts.build import build_facts
    from cds.service.why.trace import card_traces

    record = ingest(snapshot.request)
    facts = build_facts(record, valuesets=ruleset.valuesets, labs=ruleset.labs, catalog=ruleset.catalog,
                        now=snapshot.now, matcher=_matcher(ruleset))
    traces, thresholds, chosen = card_traces(rule, facts, ruleset)
    if rule.spec.version != card_version:
        notes.append(f"The card came from {rule_id} {card_version}; the rule served now is {rule.spec.version}.")
    if chosen is None or traces[chosen].indicator != card.get("indicator"):
        notes.append("With the rules served now, the stored values do not give this card "
                     + ("(no card of the rule holds)." if chosen is None else
                        f"(card {chosen}, {traces[chosen].indicator}, would be shown).")
                     + " The trace below is what the rules say now.")
    more = _more(rule, chosen, facts, ruleset) if chosen is not None else None
    names = _lab_names(rule, ruleset)
    age = f"{facts.age_years:.0f} years" if facts.age_years is not None else "age unknown"
    context.update(
        rule=rule.spec, traces=traces, chosen=chosen, more=markdown_lite(more),
        charts=_charts(rule, ruleset, record, facts, thresholds),
        evidence=_evidence(rule, facts, names), attributes=_rule_attributes(rule.spec),
        patient=f"{facts.patient_id or '(no id)'}, {age}, sex {facts.sex}", ignored=[
            (i.fact, i.resource, i.reason) for i in facts.ignored if i.fact in names or i.fact.startswith("insulin")],
    )
    return _plain_units(environment().get_template("why.html").render(**context))


def _plain_units(html: str) -> str:
    """UCUM annotations as a clinician writes them (``mL/min/1.73 m2``, not ``mL/min/{1.73_m2}``),
    everywhere on the page: values, thresholds, trace and chart text come from shared wording."""
    return html.replace("{1.73_m2}", "1.73 m2")


def render_error(status: int, message: str) -> str:
    """A page with no patient data at all (bad, unknown or expired link)."""
    return environment().get_template("error.html").render(status=status, message=message)
