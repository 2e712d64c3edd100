"""report.html: one self-contained page for the clinical lead and the governance committee.

Why this shape: a screen's audience opens the report from a shared drive or an email, often offline
and in locked-down browsers, so the page carries everything inline: charts are SVG drawn by matplotlib
(Agg backend, text kept as text), styles are inline CSS, and there is no script and no external
resource at all. Charts:

1. cards per rule, stacked by indicator;
2. patients by pathway (a patient counts once per pathway however many of its cards fired);
3. for the key values behind the cards (the numeric facts the firing cards' conditions read, in the
   engine's canonical units), their distribution over the patients with cards, with every numeric
   threshold the loaded rules compare that fact against drawn as a line.

Then the top of the worklist (critical first), and the figures of summary.json.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from cds.rules.model import RuleSet
from cds.screen.core import INDICATOR_ORDER, WorklistRow

__all__ = ["PATHWAYS", "pathway_of", "rule_thresholds", "write_report"]

TOP_ROWS = 50
MAX_VALUE_CHARTS = 6
COLOURS = {"critical": "#c62828", "warning": "#ef8f00", "info": "#1565c0"}

#: Display grouping of the rules into the care pathways of pathways.md section 2 (a rule not listed
#: here is shown under its own id, so a new rule is never hidden).
PATHWAYS: dict[str, tuple[str, ...]] = {
    "Recognition of SIR": ("sir-suspected", "sir-case-finding", "receptor-defect-pattern", "lipodystrophy-pattern",
                           "type-b-suspected"),
    "Referral and monitoring": ("specialist-referral", "lipodystrophy-monitoring"),
    "Missing safety data": ("safety-data-needed",),
    "Metformin": ("metformin-start", "metformin-renal"),
    "Pioglitazone": ("pioglitazone-consider", "pioglitazone-safety"),
    "Insulin": ("concentrated-insulin", "u500-safety", "hypoglycaemia-deescalation"),
    "Lipodystrophy treatment": ("metreleptin-consider", "metreleptin-safety", "lipodystrophy-lipid-safety"),
    "Type B immunosuppression": ("type-b-immunosuppression",),
}
_PATHWAY_OF = {rule_id: name for name, rules in PATHWAYS.items() for rule_id in rules}


def pathway_of(rule_id: str) -> str:
    return _PATHWAY_OF.get(rule_id, rule_id)


def _walk(node: Any) -> list[Any]:
    """Every node of a condition tree (definitions followed through their Ref)."""
    found = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current is None:
            continue
        found.append(current)
        stack.extend(getattr(current, "items", None) or [])
        for attribute in ("item", "inner"):
            child = getattr(current, attribute, None)
            if child is not None:
                stack.append(child)
    return found


def rule_thresholds(ruleset: RuleSet) -> dict[str, dict[float, set[str]]]:
    """fact -> numeric threshold -> ids of the rules that compare the fact against it (canonical units)."""
    found: dict[str, dict[float, set[str]]] = defaultdict(lambda: defaultdict(set))
    for rule in ruleset.rules:
        if rule.spec.status != "active":
            continue
        for condition in [rule.when, *rule.card_conditions]:
            for node in _walk(condition):
                value = getattr(node, "value", None)
                fact = getattr(node, "fact", None)
                if (isinstance(fact, str) and getattr(node, "kind", None) == "number"
                        and isinstance(value, (int, float)) and not isinstance(value, bool)):
                    found[fact][float(value)].add(rule.spec.id)
    return found


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG in HTML5
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text (searchable, small)
    matplotlib.rcParams["svg.hashsalt"] = "cds-screen"  # stable ids: the same screen gives the same page
    matplotlib.rcParams["font.family"] = "sans-serif"
    import matplotlib.pyplot as plt

    return plt


def _cards_chart(rows: list[WorklistRow]) -> str | None:
    if not rows:
        return None
    plt = _plt()
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        counts[row.rule_id][row.indicator] += 1
    rules = sorted(counts, key=lambda r: (-sum(counts[r].values()), r))
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(rules) + 1.2))
    left = [0] * len(rules)
    for indicator in sorted(INDICATOR_ORDER, key=INDICATOR_ORDER.__getitem__):
        values = [counts[r][indicator] for r in rules]
        if any(values):
            axes.barh(rules, values, left=left, color=COLOURS[indicator], label=indicator)
            left = [a + b for a, b in zip(left, values, strict=True)]
    axes.invert_yaxis()
    axes.set_xlabel("cards")
    axes.set_title("Cards per rule and indicator")
    axes.legend(loc="lower right", frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    svg = _svg(figure)
    plt.close(figure)
    return svg


def _pathway_chart(rows: list[WorklistRow]) -> str | None:
    if not rows:
        return None
    plt = _plt()
    patients: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        patients[pathway_of(row.rule_id)].add(row.patient_id)
    names = sorted(patients, key=lambda n: (-len(patients[n]), n))
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    axes.barh(names, [len(patients[n]) for n in names], color="#546e7a")
    axes.invert_yaxis()
    axes.set_xlabel("patients with at least one card")
    axes.set_title("Patients by pathway")
    axes.spines[["top", "right"]].set_visible(False)
    svg = _svg(figure)
    plt.close(figure)
    return svg


def _value_charts(rows: list[WorklistRow], ruleset: RuleSet) -> list[tuple[str, str]]:
    values: dict[str, dict[str, float]] = defaultdict(dict)  # fact -> patient -> value
    for row in rows:
        for fact, value in json.loads(row.key_values or "{}").items():
            values[fact][row.patient_id] = float(value)
    if not values:
        return []
    thresholds = rule_thresholds(ruleset)
    facts = sorted(values, key=lambda f: (-len(values[f]), f))[:MAX_VALUE_CHARTS]
    plt = _plt()
    charts = []
    for fact in facts:
        data = sorted(values[fact].values())
        spec = ruleset.catalog.get(fact)
        unit = spec.unit if spec is not None and spec.unit else ""
        figure, axes = plt.subplots(figsize=(6, 2.6))
        axes.hist(data, bins=min(30, max(5, len(set(data)))), color="#78909c")
        for number, (threshold, rule_ids) in enumerate(sorted(thresholds.get(fact, {}).items())[:5]):
            axes.axvline(threshold, color="#c62828", linestyle="--", linewidth=1)
            axes.annotate(f"{threshold:g} ({', '.join(sorted(rule_ids))[:40]})", xy=(threshold, 1),
                          xycoords=("data", "axes fraction"), xytext=(3, -12 - 11 * number),
                          textcoords="offset points", fontsize=7, color="#c62828")
        axes.set_xlabel(f"{fact} ({unit})" if unit else fact)
        axes.set_ylabel("patients")
        axes.set_title(f"{fact}: {len(data)} patients with cards", fontsize=10)
        axes.spines[["top", "right"]].set_visible(False)
        charts.append((fact, _svg(figure)))
        plt.close(figure)
    return charts


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#212121;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.85em}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f5f5f5}.critical{color:#c62828;font-weight:bold}.warning{color:#ef6c00;font-weight:bold}.info{color:#1565c0}
.figures td:first-child{width:16em;color:#555}.charts{display:flex;flex-wrap:wrap;gap:1em}.charts figure{margin:0}
.note{color:#555;font-size:.9em}svg{max-width:100%;height:auto}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def render_report(rows: list[WorklistRow], summary: dict[str, Any], ruleset: RuleSet) -> str:
    """The page as a string (see the module docstring)."""
    figures = [("patients", summary["patients"]), ("resources", summary["resources"]),
               ("evaluated fully (stage 2)", summary.get("patients_evaluated")),
               ("set aside by the first pass", summary.get("patients_dropped_by_stage1")),
               ("cards", summary["cards"]), ("patients with cards", summary["patients_with_cards"]),
               ("patients that could not be evaluated", summary.get("patients_with_errors", 0)),
               ("evaluation time (now)", summary["now"]), ("ruleset digest", summary["ruleset_digest"]),
               ("engine", f"{summary['engine']}, {summary['workers']} workers"),
               ("elapsed", (f"{summary['elapsed_s']} s ({summary['patients_per_s']} patients/s, "
                           f"{summary['resources_per_s']} resources/s)"))]
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Population screen: {summary['cards']} cards for {summary['patients_with_cards']} patients</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Population screen for severe insulin resistance and lipodystrophy</h1>",
        ('<p class="note">Every patient was evaluated as on patient-view at the evaluation time below, through '
        "the same rules and code as the CDS Hooks service. Cards are advice to a clinician, to be reviewed "
        "against the full record; they never replace clinical judgement.</p>"),
        '<table class="figures" id="figures">',
        *[f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in figures],
        "</table>",
    ]
    if summary.get("patients_with_errors"):
        parts.append(f'<p class="critical">{summary["patients_with_errors"]} patient(s) could not be evaluated and '
                     "are not in this worklist: see errors.csv.</p>")
    parts.append('<h2>Cards</h2><div class="charts" id="charts">')
    for title, svg in (("cards per rule and indicator", _cards_chart(rows)), ("patients by pathway", _pathway_chart(rows))):
        if svg:
            parts.append(f'<figure aria-label="{_esc(title)}">{svg}</figure>')
    parts.append("</div>")
    value_charts = _value_charts(rows, ruleset)
    if value_charts:
        parts.append("<h2>Key values behind the cards</h2>")
        parts.append('<p class="note">One value per patient with a card whose conditions read it (canonical units); '
                     "dashed lines: the thresholds the loaded rules compare it against.</p>")
        parts.append('<div class="charts" id="value-charts">')
        parts += [f'<figure aria-label="{_esc(fact)}">{svg}</figure>' for fact, svg in value_charts]
        parts.append("</div>")
    if not rows:
        parts.append("<p>No card fired for any patient.</p>")
    parts.append(f"<h2>Top of the worklist ({min(TOP_ROWS, len(rows))} of {len(rows)} rows)</h2>")
    parts.append('<table id="worklist"><thead><tr><th>patient</th><th>rule</th><th>indicator</th><th>summary</th>'
                 "<th>data through</th><th>evidence</th></tr></thead><tbody>")
    for row in rows[:TOP_ROWS]:
        evidence = ", ".join(row.evidence.split(";")[:4]) + (" ..." if row.evidence.count(";") >= 4 else "")
        parts.append(f"<tr><td>{_esc(row.patient_id)}</td><td>{_esc(row.rule_id)} {_esc(row.rule_version)}</td>"
                     f'<td class="{_esc(row.indicator)}">{_esc(row.indicator)}</td><td>{_esc(row.summary)}</td>'
                     f"<td>{_esc(row.data_through)}</td><td>{_esc(evidence)}</td></tr>")
    parts.append("</tbody></table>")
    parts.append('<p class="note">The full worklist is in worklist.csv and worklist.parquet beside this page.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir: Path, rows: list[WorklistRow], summary: dict[str, Any], ruleset: RuleSet) -> Path:
    """Write ``out_dir/report.html`` and return its path."""
    path = out_dir / "report.html"
    path.write_text(render_report(rows, summary, ruleset), encoding="utf-8")
    return path
