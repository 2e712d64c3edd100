"""A fingerprint per rule of what the clinician sees and what decides it, recorded beside the rules.

Why: a rule's ``version`` is how the audit trail and the safety committee tell one behaviour from
another, and it is bumped by hand. A change to a shared threshold in ``definitions.yaml`` (e.g.
``metformin_egfr_stop``, which metformin-start prints in its card) changes a rule's text without
touching its file, so nothing reminded the author to bump it. The fingerprint hashes the rule's
conditions, card templates, suggestions, hooks and links, *and* everything they resolve to outside
the file: the thresholds and definitions it uses, the codes of its value sets and its lab
definitions. ``rulesets/fingerprints.json`` records ``{rule id: {version, fingerprint}}``;
``cds rules validate`` warns when a fingerprint changed and the version did not, and
``cds rules fingerprint --update`` records the current ones (after the version bump).

Documentation-only fields (description, evidence, limitations, changelog, source attributes,
criterion-4 basis, approval) are left out: editing them is not a change in behaviour.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cds.rules.model import Issue, LoadedRule, RuleSet
from cds.rules.usage import rule_usage

__all__ = ["FINGERPRINT_FILE", "check_fingerprints", "fingerprint", "read_fingerprints", "write_fingerprints"]

FINGERPRINT_FILE = "fingerprints.json"
_BEHAVIOUR_FIELDS = ("title", "hooks", "source", "thresholds", "when", "cards", "links", "override_reasons")


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def fingerprint(ruleset: RuleSet, rule: LoadedRule) -> str:
    """SHA-256 (first 16 hex digits) over the rule's behaviour and the shared things it resolves to."""
    spec = rule.spec.model_dump(mode="json", include=set(_BEHAVIOUR_FIELDS))
    usage = rule_usage(ruleset, rule)
    shared = ruleset.definitions
    document = {
        "rule": spec,
        "thresholds": {name: _plain(shared.thresholds[name]) for name in sorted(usage.thresholds)
                       if name in shared.thresholds and name not in rule.spec.thresholds},
        "definitions": {name: _plain(shared.definitions[name].when) for name in sorted(usage.definitions)
                        if name in shared.definitions},
        "valuesets": {vs_id: sorted(_codes(ruleset.valuesets[vs_id])) for vs_id in sorted(usage.valuesets)
                      if vs_id in ruleset.valuesets},
        "labs": {name: ruleset.labs.definitions[name].model_dump(mode="json", exclude={"source"})
                 for name in sorted(usage.labs)},
    }
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _codes(valueset: Any) -> list[str]:
    """Everything that decides membership: codes, ICD prefixes, name patterns and the exclusions."""
    parts = [f"code {s}|{c}" for s, c in valueset.codes]
    parts += [f"prefix {s}|{p}" for s, p in valueset.prefixes]
    parts += [f"name {n}" for n in valueset.names]
    parts += [f"not code {s}|{c}" for s, c in valueset.exclude_codes]
    parts += [f"not prefix {s}|{p}" for s, p in valueset.exclude_prefixes]
    parts += [f"not name {n}" for n in valueset.exclude_names]
    return parts


def read_fingerprints(directory: Path) -> dict[str, dict[str, str]] | None:
    """The recorded fingerprints, or None when the folder records none (no check then)."""
    path = directory / FINGERPRINT_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{rule id: {{version, fingerprint}}}}")
    return data


def write_fingerprints(ruleset: RuleSet) -> Path:
    """Record every rule's current version and fingerprint (sorted, one rule per line: small diffs)."""
    entries = {rule.spec.id: {"version": rule.spec.version, "fingerprint": fingerprint(ruleset, rule)}
               for rule in sorted(ruleset.rules, key=lambda r: r.spec.id)}
    lines = [f"  {json.dumps(rule_id)}: {json.dumps(entry, sort_keys=True)}" for rule_id, entry in entries.items()]
    path = ruleset.directory / FINGERPRINT_FILE
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    return path


def check_fingerprints(ruleset: RuleSet) -> list[Issue]:
    """Warnings: behaviour changed at the same version; a rule without a record; a stale record."""
    path = ruleset.directory / FINGERPRINT_FILE
    try:
        recorded = read_fingerprints(ruleset.directory)
    except (ValueError, OSError) as exc:
        return [Issue(str(path), 1, None, f"cannot read the fingerprints: {exc}")]
    if recorded is None:
        return []
    update = "record it with `cds rules fingerprint --update`"
    issues: list[Issue] = []
    for rule in ruleset.rules:
        entry = recorded.get(rule.spec.id)
        where = (str(rule.path), rule.source.line_of(("version",)), rule.spec.id)
        if not isinstance(entry, dict):
            issues.append(Issue(*where, f"no fingerprint recorded in {FINGERPRINT_FILE}: {update}",
                                severity="warning"))
            continue
        current = fingerprint(ruleset, rule)
        if current == entry.get("fingerprint"):
            continue
        if entry.get("version") == rule.spec.version:
            issues.append(Issue(*where, (
                f"the rule's card text or logic changed (conditions, cards, or a shared threshold, definition, "
                f"value set or lab it uses) but its version is still {rule.spec.version}: bump the version, add a "
                f"changelog line, then {update}"), severity="warning"))
        else:
            issues.append(Issue(*where, f"version {rule.spec.version} is not recorded in {FINGERPRINT_FILE} "
                                        f"(recorded: {entry.get('version')}): {update}", severity="warning"))
    return issues
