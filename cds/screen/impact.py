"""What a ruleset change does to a population: compare two screens of the same data, rule by rule.

The informatician's pre-go-live question ("if we raise the metformin eGFR stop threshold from 30 to
35, who gets a different card?") is answered by screening the same INPUT with the baseline and the
candidate rulesets and diffing the two worklists. A card is identified by (patient, rule): a rule
shows at most one card per patient (the highest indicator whose conditions hold), so a changed
indicator is a change of that card, not a removal plus an addition.

This module only compares worklists (rows with ``patient_id``, ``rule_id``, ``rule_version``,
``indicator``, ``summary``); running the two screens is the caller's job (``cds rules impact``), so
the comparison can be tested and reused on any two worklists.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EXAMPLES", "Impact", "RuleImpact", "compare", "read_worklist", "write_impact"]

#: Example patients listed per kind of change in impact.md (impact.json lists every patient).
EXAMPLES = 5

_INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass
class RuleImpact:
    """One rule's cards under each ruleset and the patients whose card changed."""

    rule_id: str
    baseline_version: str | None
    candidate_version: str | None
    baseline_cards: int = 0
    candidate_cards: int = 0
    baseline_patients: int = 0
    candidate_patients: int = 0
    baseline_by_indicator: dict[str, int] = field(default_factory=dict)
    candidate_by_indicator: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)  # patients with a card only under the candidate
    removed: list[str] = field(default_factory=list)  # patients with a card only under the baseline
    indicator_changed: list[tuple[str, str, str]] = field(default_factory=list)  # (patient, before, after)
    summary_changed: list[str] = field(default_factory=list)  # same indicator, other wording

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.indicator_changed or self.summary_changed
                    or self.baseline_version != self.candidate_version)

    def as_dict(self, examples: int | None = None) -> dict[str, Any]:
        def cut(items: list[Any]) -> list[Any]:
            return items[:examples] if examples is not None else items

        transitions = Counter(f"{before}->{after}" for _, before, after in self.indicator_changed)
        return {
            "rule_id": self.rule_id,
            "version": {"baseline": self.baseline_version, "candidate": self.candidate_version},
            "cards": {"baseline": self.baseline_cards, "candidate": self.candidate_cards},
            "patients": {"baseline": self.baseline_patients, "candidate": self.candidate_patients},
            "by_indicator": {"baseline": self.baseline_by_indicator, "candidate": self.candidate_by_indicator},
            "added": len(self.added),
            "removed": len(self.removed),
            "indicator_changes": dict(sorted(transitions.items())),
            "summary_changed": len(self.summary_changed),
            "patients_added": cut(self.added),
            "patients_removed": cut(self.removed),
            "patients_indicator_changed": [
                {"patient_id": p, "baseline": b, "candidate": a} for p, b, a in cut(self.indicator_changed)],
            "patients_summary_changed": cut(self.summary_changed),
        }


@dataclass
class Impact:
    """The comparison of two screens of the same input."""

    baseline: dict[str, Any]
    candidate: dict[str, Any]
    rules: list[RuleImpact]

    @property
    def changed_rules(self) -> list[RuleImpact]:
        return [rule for rule in self.rules if rule.changed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "changed_rules": [rule.rule_id for rule in self.changed_rules],
            "rules": [rule.as_dict() for rule in self.rules],
        }


def read_worklist(path: Path) -> list[dict[str, str]]:
    """The rows of a screen's worklist.csv."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _index(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in rows:
        key = (str(row["patient_id"]), str(row["rule_id"]))
        if key in out:
            raise ValueError(f"two cards of rule {key[1]} for patient {key[0]} in one worklist")
        out[key] = row
    return out


def _version_of(rows: Mapping[tuple[str, str], Mapping[str, Any]], rule_id: str) -> str | None:
    for (_, rid), row in rows.items():
        if rid == rule_id:
            return str(row.get("rule_version") or "") or None
    return None


def _tally(impact: RuleImpact, rows: Mapping[tuple[str, str], Mapping[str, Any]], side: str) -> None:
    counts: dict[str, int] = {}
    patients: set[str] = set()
    for (patient, rule_id), row in rows.items():
        if rule_id == impact.rule_id:
            counts[str(row["indicator"])] = counts.get(str(row["indicator"]), 0) + 1
            patients.add(patient)
    ordered = dict(sorted(counts.items(), key=lambda item: _INDICATOR_ORDER.get(item[0], 9)))
    if side == "baseline":
        impact.baseline_by_indicator, impact.baseline_cards = ordered, sum(counts.values())
        impact.baseline_patients = len(patients)
    else:
        impact.candidate_by_indicator, impact.candidate_cards = ordered, sum(counts.values())
        impact.candidate_patients = len(patients)


def compare(baseline_rows: Iterable[Mapping[str, Any]], candidate_rows: Iterable[Mapping[str, Any]],
            *, baseline: dict[str, Any] | None = None, candidate: dict[str, Any] | None = None,
            baseline_versions: Mapping[str, str] | None = None,
            candidate_versions: Mapping[str, str] | None = None) -> Impact:
    """Compare two worklists of the same input, per rule.

    ``*_versions`` (rule id -> version of every loaded rule) let rules without any card still appear
    with their versions (and a rule that exists on one side only show as added or withdrawn).
    """
    before, after = _index(baseline_rows), _index(candidate_rows)
    rule_ids = sorted({r for _, r in before} | {r for _, r in after}
                      | set(baseline_versions or {}) | set(candidate_versions or {}))
    impacts: dict[str, RuleImpact] = {}
    for rule_id in rule_ids:
        impact = RuleImpact(
            rule_id,
            (baseline_versions or {}).get(rule_id) or _version_of(before, rule_id),
            (candidate_versions or {}).get(rule_id) or _version_of(after, rule_id))
        _tally(impact, before, "baseline")
        _tally(impact, after, "candidate")
        impacts[rule_id] = impact
    for key in sorted(before.keys() | after.keys()):
        patient, rule_id = key
        impact = impacts[rule_id]
        old, new = before.get(key), after.get(key)
        if old is None:
            impact.added.append(patient)
        elif new is None:
            impact.removed.append(patient)
        elif old["indicator"] != new["indicator"]:
            impact.indicator_changed.append((patient, str(old["indicator"]), str(new["indicator"])))
        elif old["summary"] != new["summary"]:
            impact.summary_changed.append(patient)
    return Impact(baseline or {}, candidate or {}, list(impacts.values()))


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _ids(ids: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in ids) or "-"


def _markdown(impact: Impact) -> str:
    base, cand = impact.baseline, impact.candidate
    lines = [
        "# Rule change impact",
        "",
        (f"- Input: `{base.get('input', '?')}`: {base.get('patients', '?')} patients, "
        f"{base.get('resources', '?')} resources, evaluated as on patient-view at {base.get('now', '?')}"),
        (f"- Baseline rulesets `{base.get('rulesets', '?')}` (digest {str(base.get('ruleset_digest', '?'))[:12]}): "
        f"{base.get('cards', '?')} cards for {base.get('patients_with_cards', '?')} patients"),
        (f"- Candidate rulesets `{cand.get('rulesets', '?')}` (digest {str(cand.get('ruleset_digest', '?'))[:12]}): "
        f"{cand.get('cards', '?')} cards for {cand.get('patients_with_cards', '?')} patients"),
        "",
    ]
    changed = impact.changed_rules
    if changed:
        lines += [f"**{len(changed)} rule(s) change:** " + ", ".join(f"`{r.rule_id}`" for r in changed), ""]
    else:
        lines += ["**No rule changes any card on this population.**", ""]
    lines += [
        "| rule | version | cards | patients | added | removed | indicator changes | other summary |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rule in impact.rules:
        data = rule.as_dict()
        version = (rule.baseline_version or "-") if rule.baseline_version == rule.candidate_version \
            else f"{rule.baseline_version or 'absent'} -> {rule.candidate_version or 'absent'}"
        changes = ", ".join(f"{k.replace('->', ' -> ')}: {v}" for k, v in data["indicator_changes"].items()) or "0"
        mark = "**" if rule.changed else ""
        lines.append(f"| {mark}{rule.rule_id}{mark} | {version} | {rule.baseline_cards} -> {rule.candidate_cards} | "
                     f"{rule.baseline_patients} -> {rule.candidate_patients} | {len(rule.added)} | "
                     f"{len(rule.removed)} | {changes} | {len(rule.summary_changed)} |")
    for rule in changed:
        data = rule.as_dict(EXAMPLES)
        same_version = rule.baseline_version == rule.candidate_version and rule.baseline_version is not None
        lines += ["", f"## {rule.rule_id}", ""]
        if same_version:
            lines += [(f"Cards change but the rule's version ({rule.baseline_version}) does not: bump it (and its "
                      "changelog) before go-live, so the audit trail tells the two behaviours apart."), ""]
        lines += [(f"By indicator: baseline {_counts(rule.baseline_by_indicator)}; "
                   f"candidate {_counts(rule.candidate_by_indicator)}."), ""]
        if rule.added:
            lines.append(f"- New card for {len(rule.added)} patient(s), e.g. {_ids(data['patients_added'])}")
        if rule.removed:
            lines.append(f"- Card gone for {len(rule.removed)} patient(s), e.g. {_ids(data['patients_removed'])}")
        for transition, count in data["indicator_changes"].items():
            examples = [p for p, b, a in rule.indicator_changed if f"{b}->{a}" == transition][:EXAMPLES]
            lines.append(f"- Indicator {transition.replace('->', ' -> ')} for {count} patient(s), e.g. {_ids(examples)}")
        if rule.summary_changed:
            lines.append(f"- Same indicator, other summary for {len(rule.summary_changed)} patient(s), e.g. "
                         f"{_ids(data['patients_summary_changed'])}")
    lines += ["", "impact.json lists every patient; the two full screens are in baseline/ and candidate/.", ""]
    return "\n".join(lines)


def write_impact(impact: Impact, out: Path) -> tuple[Path, Path]:
    """Write impact.json (every patient) and impact.md (counts and examples) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "impact.json", out / "impact.md"
    json_path.write_text(json.dumps(impact.as_dict(), indent=2) + "\n", encoding="utf-8")
    md_path.write_text(_markdown(impact), encoding="utf-8")
    return json_path, md_path


def run_impact(input_path: Path, out: Path, *, baseline_dir: Path, candidate_dir: Path,
               now: str | None = None, engine: str = "local", workers: int | None = None,
               master: str | None = None) -> Impact:
    """Screen ``input_path`` with both rulesets (into ``out/baseline`` and ``out/candidate``), compare,
    and write impact.md + impact.json into ``out``.

    Both rulesets are loaded with the schema check the engine needs (a candidate whose own rule tests
    still describe the old threshold is exactly what this command is for, so they are not run here:
    ``cds rules test`` and the reload gate run them).
    """
    from cds.fhir.dates import parse_now
    from cds.rules.loader import load_ruleset
    from cds.screen.run import screen

    instant = parse_now(now)
    sides: dict[str, dict[str, Any]] = {}
    versions: dict[str, dict[str, str]] = {}
    rows: dict[str, list[dict[str, str]]] = {}
    # Both rulesets are loaded before anything is screened: a candidate that does not load fails at once.
    rulesets = {"baseline": load_ruleset(baseline_dir), "candidate": load_ruleset(candidate_dir)}
    for side, directory in (("baseline", baseline_dir), ("candidate", candidate_dir)):
        ruleset = rulesets[side]
        summary = screen(input_path, out / side, now=instant, ruleset=ruleset, engine=engine, workers=workers,
                         master=master, report=False)
        versions[side] = {rule.spec.id: rule.spec.version for rule in ruleset.rules if rule.spec.status == "active"}
        rows[side] = read_worklist(out / side / "worklist.csv")
        sides[side] = {"rulesets": str(directory), "input": str(input_path),
                       **{key: summary[key] for key in ("ruleset_digest", "patients", "resources", "cards",
                                                       "patients_with_cards", "patients_with_errors", "now",
                                                       "engine", "elapsed_s")}}
    impact = compare(rows["baseline"], rows["candidate"], baseline=sides["baseline"], candidate=sides["candidate"],
                     baseline_versions=versions["baseline"], candidate_versions=versions["candidate"])
    write_impact(impact, out)
    return impact
