"""The rule catalogue: the document a clinical safety officer reads and signs off (Markdown and HTML).

Everything is generated from the loaded RuleSet, never written by hand, so the catalogue always says
what the engine does: conditions come from the parsed condition tree (thresholds already converted
to the fact's unit), value sets from their loaded codes, and test counts from the test files. No
timestamp is printed: the same rules give the same bytes, so a diff of two catalogues is the review.

The document is built once as a small tree of blocks (:class:`Heading`, :class:`Para`, :class:`Table`,
:class:`Bullets`, :class:`Code`, :class:`Details`) whose inline text is a list of spans, then written
out by two small renderers, so Markdown and HTML cannot disagree.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from cds.authoring.testfile import TestFileError, load_test_file, test_path_for
from cds.cards.render import plain_unit, plain_units
from cds.facts.models import fmt_number
from cds.rules.conditions import All, AnyOf, Compare, ConditionParser, Node, Not, Ref
from cds.rules.model import LoadedRule, RuleSet
from cds.rules.usage import RuleUsage, rule_usage
from cds.valuesets import SYSTEM_ALIASES

__all__ = ["ExampleCard", "build_catalog", "build_template_appendix", "build_valueset_appendix", "catalog_json",
           "condition_outline", "example_cards", "render_html", "render_markdown"]

# -- document model ----------------------------------------------------------------------------------

Span = str | tuple[str, str] | tuple[str, str, str]  # text | ("b"|"code"|"i", text) | ("link", label, url)
Inline = list[Span]


@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    spans: Inline


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Inline]]


@dataclass
class Bullets:
    items: list[tuple[int, Inline]]  # (depth, text)


@dataclass
class Code:
    text: str


@dataclass
class Details:
    summary: str
    blocks: list[Any] = field(default_factory=list)


Block = Heading | Para | Table | Bullets | Code | Details

# -- conditions in plain English ---------------------------------------------------------------------

_SYMBOL_WORDS = {"eq": "is", "ne": "is not", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def _compare_text(node: Compare, ruleset: RuleSet) -> Inline:
    if node.fact == "hook":
        return [f"hook is {node.shown}"]
    spec = ruleset.catalog.get(node.fact)
    meaning = spec.description if spec is not None else node.fact
    if node.kind == "bool":
        positive = bool(node.value) == (node.op == "eq")
        return [("" if positive else "NOT ") + (node.label or meaning), " (", ("code", node.fact), ")"]
    if node.kind == "string":
        return [meaning, f" {_SYMBOL_WORDS[node.op]} ", ("b", str(node.value)), " (", ("code", node.fact), ")"]
    return [meaning, " ", ("b", f"{_SYMBOL_WORDS[node.op]} {plain_units(node.shown)}"), " (", ("code", node.fact), ")"]


def condition_outline(node: Node | None, ruleset: RuleSet, depth: int = 0) -> list[tuple[int, Inline]]:
    """A condition tree as nested bullet lines: "all of" / "any of" / "not", leaves in words with units."""
    if node is None:
        return [(depth, ["always"])]
    if isinstance(node, (All, AnyOf)):
        if len(node.items) == 1:
            return condition_outline(node.items[0], ruleset, depth)
        head = "all of:" if isinstance(node, All) else "any of:"
        lines: list[tuple[int, Inline]] = [(depth, [("i", head)])]
        for item in node.items:
            lines += condition_outline(item, ruleset, depth + 1)
        return lines
    if isinstance(node, Not):
        inner = condition_outline(node.item, ruleset, depth + 1)
        if len(inner) == 1:
            return [(depth, [("b", "NOT "), *inner[0][1]])]
        return [(depth, [("b", "NOT"), " (none of the following):"]), *inner]
    if isinstance(node, Ref):
        definition = ruleset.definitions.definitions.get(node.name)
        text = definition.description if definition is not None else ""
        return [(depth, [("link", node.name, f"#def-{node.name}"), f": {text}" if text else ""])]
    if isinstance(node, Compare):
        return [(depth, _compare_text(node, ruleset))]
    return [(depth, [plain_units(node.describe())])]


# -- building the document ---------------------------------------------------------------------------

def _test_summary(rule: LoadedRule) -> tuple[int, Inline, list[tuple[int, Inline]]]:
    path = test_path_for(rule.path)
    if not path.exists():
        return 0, [("b", "no tests")], []
    try:
        tests = load_test_file(path)
    except TestFileError as exc:
        return 0, [("b", f"test file unreadable ({len(exc.problems)} problems)")], []
    fires = sum(1 for c in tests.cases if c.spec.expect == "fires")
    silent = len(tests.cases) - fires
    items: list[tuple[int, Inline]] = [(0, [("b", c.spec.expect), f" ({c.hook}): {c.name}"
                  + (f" -> {c.spec.indicator}" if c.spec.indicator else "")
                  + (f" [known gap: {c.spec.todo}]" if c.spec.todo else "")]) for c in tests.cases]
    return len(tests.cases), [f"{len(tests.cases)} cases ({fires} fires, {silent} silent) in ", ("code", path.name)], items


def _thresholds(rule: LoadedRule, ruleset: RuleSet, usage: RuleUsage) -> list[list[Inline]]:
    rows: list[list[Inline]] = []
    for name in sorted(usage.thresholds):
        spec = rule.spec.thresholds.get(name) or ruleset.definitions.thresholds.get(name)
        if spec is None:
            continue
        scope = "this rule" if name in rule.spec.thresholds else "shared"
        rows.append([[("code", name)], [fmt_number(spec.value)], [plain_unit(spec.unit) or "-"], [spec.source], [scope]])
    return rows


def _action_text(action: Any) -> Inline:
    if action.create is not None:
        resource = action.create
        code = ""
        concept = resource.get("code") or resource.get("medicationCodeableConcept") or {}
        codings = concept.get("coding") or [] if isinstance(concept, dict) else []
        if codings:
            first = codings[0]
            code = f" {first.get('code')} {first.get('display') or ''}".rstrip()
        return [f"create {resource.get('resourceType')}{code}"
                + (f" ({action.description})" if action.description else "")]
    if action.delete_drafts is not None:
        return ["delete each drafted order of ", ("link", action.delete_drafts, f"valuesets.html#vs-{action.delete_drafts}")]
    return ["stop (update to status stopped) each active request of ",
            ("link", action.stop_active or "", f"valuesets.html#vs-{action.stop_active}")]


@dataclass(frozen=True)
class ExampleCard:
    """A card as the clinician sees it, rendered by the real engine for one of the rule's test cases."""

    case: str
    hook: str
    card_index: int
    indicator: str
    summary: str
    detail: str


def example_cards(ruleset: RuleSet, rule: LoadedRule, engine: Any | None = None) -> list[ExampleCard]:
    """One rendered example per card of the rule (the first ``fires`` case that shows it), in card order.

    The cases are the rule's own ``<id>.test.yaml``: the committee signs what the tests prove.
    """
    from cds.engine import Engine

    path = test_path_for(rule.path)
    if not path.exists():
        return []
    try:
        tests = load_test_file(path)
    except TestFileError:
        return []
    engine = engine or Engine(ruleset, include_drafts=True)
    found: dict[int, ExampleCard] = {}
    for case in tests.cases:
        if case.spec.expect != "fires" or case.spec.todo or len(found) == len(rule.spec.cards):
            continue
        try:
            evaluation = engine.evaluate(case.request, now=case.now)
        except Exception:  # noqa: BLE001 - a case the engine refuses is reported by cds rules test
            continue
        index = evaluation.chosen.get(rule.spec.id)
        if index is None or index in found:
            continue
        for card in evaluation.cards:
            if card.source.topic is not None and card.source.topic.code == rule.spec.id:
                found[index] = ExampleCard(case.name, case.hook, index, card.indicator, card.summary,
                                           card.detail or "")
    return [found[i] for i in sorted(found)]


def _transparency_blocks(rule: LoadedRule) -> list[Block]:
    blocks: list[Block] = []
    for title, rows in rule.spec.transparency():
        blocks.append(Para([("b", title)]))
        blocks.append(Table(["Attribute", "Value"], [[[label], [value]] for label, value in rows]))
    return blocks


_IF_BLOCK = re.compile(r"\{%-?\s*if\b.*?%\}.*?\{%-?\s*endif\s*-?%\}", re.DOTALL)
_VALUE = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def _label_text(template: str) -> str:
    """A suggestion label without its Jinja: optional parts dropped, values shown as [value]."""
    text = _VALUE.sub("[value]", _IF_BLOCK.sub("", template))
    return " ".join(re.sub(r"\{%.*?%\}", "", text).split())


def _rule_blocks(rule: LoadedRule, ruleset: RuleSet, examples: list[ExampleCard]) -> list[Block]:
    spec = rule.spec
    usage = rule_usage(ruleset, rule)
    _count, tests_text, test_items = _test_summary(rule)
    approval = spec.approval
    blocks: list[Block] = [
        Heading(2, f"{spec.id}: {spec.title}", anchor=f"rule-{spec.id}"),
        Table(["Version", "Status", "Hooks", "Tests", "Approved by", "Approved on", "Next review"],
              [[[spec.version], [("b", spec.status)], [", ".join(spec.hooks)], tests_text,
                [approval.approved_by if approval else ("b", "not approved")],
                [approval.approved_on if approval else "-"], [approval.next_review if approval else "-"]]]),
        Para([spec.description.strip()]),
        Para([("b", "Applies when")]),
        Bullets(condition_outline(rule.when, ruleset)),
    ]
    by_index = {e.card_index: e for e in examples}
    for index, card in enumerate(spec.cards):
        hooks = ", ".join(card.hooks or spec.hooks)
        blocks.append(Heading(3, f"Card {index + 1}: {card.indicator} ({hooks})"))
        blocks.append(Para([("i", "Shown when, in addition:")]))
        blocks.append(Bullets(condition_outline(rule.card_conditions[index], ruleset)))
        example = by_index.get(index)
        if example is not None:
            blocks.append(Para([("b", "Example as the clinician sees it"), f" (test case: {example.case}; {example.hook}):"]))
            blocks.append(Para([("b", "Summary: "), example.summary]))
            blocks.append(Code(example.detail.strip()))
        else:
            blocks.append(Para([("b", "No test case shows this card"), " (its template is in the appendix)."]))
        blocks.append(Para(["Templates: ", ("link", f"{spec.id} card {index + 1}", f"templates.html#tpl-{spec.id}-{index}"),
                            " in the template appendix."]))
        if card.suggestions:
            items: list[tuple[int, Inline]] = []
            for suggestion in card.suggestions:
                items.append((0, [("b", _label_text(suggestion.label))]))
                items += [(1, _action_text(action)) for action in suggestion.actions]
            blocks.append(Para([("b", "Suggestions")]))
            blocks.append(Bullets(items))
    rows = _thresholds(rule, ruleset, usage)
    if rows:
        blocks.append(Para([("b", "Thresholds used")]))
        blocks.append(Table(["Name", "Value", "Unit", "Source", "Scope"], rows))
    if usage.valuesets:
        blocks.append(Para([("b", "Value sets used: "),
                            *_join([("link", v, f"valuesets.html#vs-{v}") for v in sorted(usage.valuesets)]),
                            " (codes in the value-set appendix)"]))
    if usage.definitions:
        blocks.append(Para([("b", "Definitions used: "), *_join([("link", d, f"#def-{d}") for d in sorted(usage.definitions)])]))
    evidence: list[tuple[int, Inline]] = [(0, [("b", "Source (on the card): "), *_reference(spec.source)])]
    evidence += [(0, _reference(ref)) for ref in spec.evidence]
    blocks.append(Para([("b", "Evidence")]))
    blocks.append(Bullets(evidence))
    blocks += _transparency_blocks(rule)  # the limitations are its "Known limitations" row
    blocks.append(Para([("b", "Tests: "), *tests_text]))
    if test_items:
        blocks.append(Details(f"{len(test_items)} test cases", [Bullets(test_items)]))
    return blocks


def _reference(ref: Any) -> Inline:
    spans: Inline = [("link", ref.label, ref.url)] if ref.url else [ref.label]
    if ref.note:
        spans.append(f" ({ref.note})")
    return spans


def _join(spans: list[Span], sep: str = ", ") -> Inline:
    out: Inline = []
    for i, span in enumerate(spans):
        if i:
            out.append(sep)
        out.append(span)
    return out


_ALIAS_OF = {uri: alias for alias, uri in SYSTEM_ALIASES.items() if alias != "SCT"}


def _valueset_blocks(vs_id: str, vs: Any) -> list[Block]:
    blocks: list[Block] = [Heading(3, f"{vs_id}: {vs.title} ({vs.kind})", anchor=f"vs-{vs_id}")]
    if vs.description:
        blocks.append(Para([vs.description.strip()]))
    if vs.sources:
        blocks.append(Bullets([(0, [f"source: {s.title} ({s.vsac or s.valueset}, version {s.version})"]) for s in vs.sources]))
    code_blocks: list[Block] = []
    for system in vs.systems:
        alias = _ALIAS_OF.get(system, system)
        codes = vs.codes_for(system)
        prefixes = vs.prefixes_for(system)
        if codes:
            code_blocks.append(Para([("b", f"{alias} ({len(codes)}): "), ", ".join(codes)]))
        if prefixes:
            code_blocks.append(Para([("b", f"{alias} code families: "), ", ".join(p + "*" for p in prefixes)]))
    if vs.names:
        code_blocks.append(Para([("b", "Names (text match, when no code matches): "), *_join([("code", n) for n in vs.names])]))
    if vs.exclude_names:
        code_blocks.append(Para([("b", "Excluded names: "), *_join([("code", n) for n in vs.exclude_names])]))
    if vs.exclude_codes or vs.exclude_prefixes:
        excluded = sorted(f"{_ALIAS_OF.get(s, s)}#{c}" for s, c in vs.exclude_codes)
        excluded += sorted(f"{_ALIAS_OF.get(s, s)}#{p}*" for s, p in vs.exclude_prefixes)
        code_blocks.append(Para([("b", "Excluded codes: "), ", ".join(excluded)]))
    total = len(vs.codes) + len(vs.prefixes)
    if total > 40:
        blocks.append(Details(f"{total} codes and families", code_blocks))
    else:
        blocks += code_blocks
    return blocks


def build_catalog(ruleset: RuleSet, examples: dict[str, list[ExampleCard]] | None = None) -> list[Block]:
    """The catalogue as blocks: contents, one section per rule (rendered example cards, the thresholds,
    value sets and definitions the rule uses, source attributes, approval), shared definitions, and a
    value-set index; the full code lists are :func:`build_valueset_appendix` (a separate file)."""
    rules = sorted(ruleset.rules, key=lambda r: r.spec.id)
    if examples is None:
        from cds.engine import Engine

        engine = Engine(ruleset, include_drafts=True)
        examples = {r.spec.id: example_cards(ruleset, r, engine) for r in rules}
    statuses = {s: sum(1 for r in rules if r.spec.status == s) for s in ("active", "draft", "retired")}
    blocks: list[Block] = [
        Heading(1, "SIR CDS rule catalogue"),
        Para(["Ruleset digest ", ("code", ruleset.digest),
              (f": {len(rules)} rules "
               f"({statuses['active']} active, {statuses['draft']} draft, {statuses['retired']} retired). "
               "Generated by "),
              ("code", "cds rules catalog"),
              (" from the rule files; do not edit by hand. "
               "Draft rules never fire in the service unless drafts are explicitly enabled; retired rules never run.")]),
        Table(["Rule", "Title", "Version", "Status", "Hooks", "Indicators", "Tests"], [
            [[("link", r.spec.id, f"#rule-{r.spec.id}")], [r.spec.title], [r.spec.version], [r.spec.status],
             [", ".join(r.spec.hooks)], [", ".join(sorted({c.indicator for c in r.spec.cards}))],
             [str(_test_summary(r)[0])]]
            for r in rules
        ]),
    ]
    usages = {r.spec.id: rule_usage(ruleset, r) for r in rules}
    for rule in rules:
        blocks += _rule_blocks(rule, ruleset, examples.get(rule.spec.id, []))
    used_defs = set().union(*(u.definitions for u in usages.values())) if rules else set()
    blocks.append(Heading(2, "Shared definitions", anchor="definitions"))
    blocks.append(Para(["Named conditions from ", ("code", "definitions.yaml"), " used by the rules above."]))
    for name, definition in ruleset.definitions.definitions.items():
        if name not in used_defs and not any(name in str(d.when) for d in ruleset.definitions.definitions.values()):
            continue
        blocks.append(Heading(3, name, anchor=f"def-{name}"))
        description: Inline = [definition.description]
        blocks.append(Para(description + ([f" Source: {definition.source}."] if definition.source else [])))
        parser = ConditionParser(catalog=ruleset.catalog, valuesets=ruleset.valuesets,
                                 thresholds=dict(ruleset.definitions.thresholds),
                                 definitions=dict(ruleset.definitions.definitions))
        blocks.append(Bullets(condition_outline(parser.parse(definition.when), ruleset)))
    blocks.append(Heading(2, "Value sets", anchor="valuesets"))
    blocks.append(Para(["The codes of each value set are in the appendix ", ("link", "valuesets.md", "valuesets.html"),
                        " (", ("code", "cds rules catalog -o DIR"), " writes it beside this file)."]))
    used_vs = sorted(set().union(*(u.valuesets for u in usages.values())) if rules else set())
    blocks.append(Table(["Value set", "Title", "Kind", "Codes", "Used by"], [
        [[("link", vs_id, f"valuesets.html#vs-{vs_id}")], [ruleset.valuesets[vs_id].title], [ruleset.valuesets[vs_id].kind],
         [str(len(ruleset.valuesets[vs_id].codes) + len(ruleset.valuesets[vs_id].prefixes))],
         [", ".join(r for r, u in usages.items() if vs_id in u.valuesets)]]
        for vs_id in used_vs]))
    return blocks


def build_valueset_appendix(ruleset: RuleSet) -> list[Block]:
    """Appendix: every value set the rules use, with its full code list (kept out of the catalogue's body)."""
    used = sorted(set().union(*(rule_usage(ruleset, r).valuesets for r in ruleset.rules)) if ruleset.rules else set())
    blocks: list[Block] = [Heading(1, "Appendix: value sets of the SIR CDS rules"),
                           Para(["Ruleset digest ", ("code", ruleset.digest), f": {len(used)} value sets."])]
    for vs_id in used:
        blocks += _valueset_blocks(vs_id, ruleset.valuesets[vs_id])
    return blocks


def build_template_appendix(ruleset: RuleSet) -> list[Block]:
    """Appendix: each card's templates (summary, detail, and the longer ``more`` of the why page).

    A template shared by several cards (a YAML anchor) is printed once and referred to after that.
    """
    blocks: list[Block] = [Heading(1, "Appendix: card templates of the SIR CDS rules"),
                           Para(["Ruleset digest ", ("code", ruleset.digest),
                                 ". Jinja templates as written in the rule files; the catalogue shows them rendered."])]
    for rule in sorted(ruleset.rules, key=lambda r: r.spec.id):
        blocks.append(Heading(2, f"{rule.spec.id} {rule.spec.version}", anchor=f"tpl-{rule.spec.id}"))
        seen: dict[str, int] = {}
        for index, card in enumerate(rule.spec.cards):
            blocks.append(Heading(3, f"Card {index + 1}: {card.indicator}", anchor=f"tpl-{rule.spec.id}-{index}"))
            blocks.append(Code("summary: " + " ".join(card.summary.split())))
            for name, text in (("detail", card.detail), ("more", card.more)):
                if not text:
                    continue
                key = f"{name}\0{text}"
                if key in seen:
                    blocks.append(Para([f"{name}: as card {seen[key] + 1}."]))
                else:
                    seen[key] = index
                    blocks.append(Para([("b", f"{name}:")]))
                    blocks.append(Code(text.strip()))
    return blocks


def catalog_json(ruleset: RuleSet, examples: dict[str, list[ExampleCard]] | None = None) -> dict[str, Any]:
    """The catalogue's facts as JSON: per rule the version, status, approval, source attributes,
    criterion-4 basis, limitations, dependencies actually used and the rendered example cards."""
    rules = sorted(ruleset.rules, key=lambda r: r.spec.id)
    if examples is None:
        from cds.engine import Engine

        engine = Engine(ruleset, include_drafts=True)
        examples = {r.spec.id: example_cards(ruleset, r, engine) for r in rules}
    out = []
    for rule in rules:
        spec, usage = rule.spec, rule_usage(ruleset, rule)
        out.append({
            "id": spec.id, "title": spec.title, "version": spec.version, "status": spec.status,
            "hooks": list(spec.hooks),
            "approval": spec.approval.model_dump() if spec.approval else None,
            "source_attributes": spec.source_attributes.model_dump(),
            "fda_criterion_4": spec.fda_criterion_4.model_dump(),
            "limitations": (spec.limitations or "").strip() or None,
            "source": spec.source.model_dump(),
            "evidence": [ref.model_dump() for ref in spec.evidence],
            "thresholds": {name: {"value": t.value, "unit": plain_unit(t.unit) or None, "source": t.source}
                           for name in sorted(usage.thresholds)
                           if (t := spec.thresholds.get(name) or ruleset.definitions.thresholds.get(name)) is not None},
            "valuesets": sorted(usage.valuesets),
            "definitions": sorted(usage.definitions),
            "examples": [{"case": e.case, "hook": e.hook, "card": e.card_index, "indicator": e.indicator,
                          "summary": e.summary, "detail": e.detail} for e in examples.get(spec.id, [])],
        })
    return {"digest": ruleset.digest, "rules": out}


# -- renderers ---------------------------------------------------------------------------------------

def _md_escape(text: str, table: bool) -> str:
    text = text.replace("\n", " ")
    return text.replace("|", "\\|") if table else text


def _emphasis(text: str, mark: str, table: bool) -> str:
    """``**bold**`` with the spaces outside the markers (``** x**`` is not bold in CommonMark)."""
    core = text.strip()
    if not core:
        return text
    lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
    return f"{lead}{mark}{_md_escape(core, table)}{mark}{trail}"


def _md_inline(spans: Inline, table: bool = False) -> str:
    out = []
    for span in spans:
        if isinstance(span, str):
            out.append(_md_escape(span, table))
        elif span[0] == "b":
            out.append(_emphasis(span[1], "**", table))
        elif span[0] == "i":
            out.append(_emphasis(span[1], "*", table))
        elif span[0] == "code":
            tick = "``" if "`" in span[1] else "`"
            code = span[1].replace("|", "&#124;") if table else span[1]
            out.append(f"{tick}{code}{tick}")
        else:
            label = _md_escape(span[1], table)
            url = span[2] if len(span) > 2 and span[2] else ""
            url = url.replace("valuesets.html#", "valuesets.md#").replace("templates.html#", "templates.md#")
            out.append(f"[{label}]({url})" if url else label)
    return "".join(out)


def _md_blocks(blocks: list[Block]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f'<a id="{block.anchor}"></a>\n' if block.anchor else ""
            out += [f"{anchor}{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Para):
            out += [_md_inline(block.spans), ""]
        elif isinstance(block, Table):
            out.append("| " + " | ".join(block.headers) + " |")
            out.append("|" + "---|" * len(block.headers))
            out += ["| " + " | ".join(_md_inline(cell, table=True) for cell in row) + " |" for row in block.rows]
            out.append("")
        elif isinstance(block, Bullets):
            out += [f"{'  ' * depth}- {_md_inline(text)}" for depth, text in block.items]
            out.append("")
        elif isinstance(block, Code):
            fence = "````" if "```" in block.text else "```"
            out += [fence + "text", block.text, fence, ""]
        elif isinstance(block, Details):
            out += ["<details>", f"<summary>{html.escape(block.summary)}</summary>", ""]
            out += _md_blocks(block.blocks)
            out += ["</details>", ""]
    return out


def render_markdown(blocks: list[Block]) -> str:
    return "\n".join(_md_blocks(blocks)).rstrip() + "\n"


def _html_inline(spans: Inline) -> str:
    out = []
    for span in spans:
        if isinstance(span, str):
            out.append(html.escape(span))
        elif span[0] in ("b", "i", "code"):
            tag = {"b": "strong", "i": "em", "code": "code"}[span[0]]
            out.append(f"<{tag}>{html.escape(span[1])}</{tag}>")
        elif len(span) > 2 and span[2]:
            out.append(f'<a href="{html.escape(span[2], quote=True)}">{html.escape(span[1])}</a>')
        else:
            out.append(html.escape(span[1]))
    return "".join(out)


def _html_bullets(items: list[tuple[int, Inline]]) -> str:
    out, depth = ["<ul>"], 0
    for index, (level, text) in enumerate(items):
        while depth < level:
            out.append("<ul>")
            depth += 1
        while depth > level:
            out.append("</ul></li>")
            depth -= 1
        nested = index + 1 < len(items) and items[index + 1][0] > level
        out.append(f"<li>{_html_inline(text)}" + ("" if nested else "</li>"))
    while depth > 0:
        out.append("</ul></li>")
        depth -= 1
    out.append("</ul>")
    return "\n".join(out)


def _html_blocks(blocks: list[Block]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{html.escape(block.anchor)}"' if block.anchor else ""
            out.append(f"<h{block.level}{anchor}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            out.append(f"<p>{_html_inline(block.spans)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Bullets):
            out.append(_html_bullets(block.items))
        elif isinstance(block, Code):
            out.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
        elif isinstance(block, Details):
            out.append(f"<details><summary>{html.escape(block.summary)}</summary>")
            out += _html_blocks(block.blocks)
            out.append("</details>")
    return out


_STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #bbb;padding:.25rem .5rem;vertical-align:top}
th{background:#eee}code{background:#f4f4f4;padding:0 .2rem}pre{background:#f4f4f4;padding:.5rem;white-space:pre-wrap}
h2{border-top:2px solid #333;padding-top:1rem;margin-top:2rem}details{margin:.5rem 0}"""


def render_html(blocks: list[Block], *, title: str = "SIR CDS rule catalogue") -> str:
    body = "\n".join(_html_blocks(blocks))
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}</title>\n"
            f"<style>\n{_STYLE}\n</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
