"""``cds rules fingerprint [DIR] [--update]``: which rules changed behaviour since their fingerprint.

See :mod:`cds.rules.fingerprint` for what is fingerprinted and why.
"""

from __future__ import annotations

from pathlib import Path

import click

from cds._exceptions import RulesetError
from cds.cli.rules_cmds import display_path, rulesets_argument

__all__ = ["command"]


@click.command(name="fingerprint")
@rulesets_argument
@click.option("--update", is_flag=True,
              help="Record every rule's current version and fingerprint in DIR/fingerprints.json.")
def command(directory: Path | None, update: bool) -> None:
    """List the rules whose card text or logic changed since fingerprints.json was recorded.

    \b
    After changing a rule (or a shared threshold, definition, value set or lab it uses):
      cds rules validate            warns: "changed ... but its version is still 1.2.0"
      (bump version + changelog in each rule named)
      cds rules fingerprint --update   records the new fingerprints; commit fingerprints.json
    Exit status 1 when a rule changed at the same version (without --update).
    """
    from cds.rules.fingerprint import FINGERPRINT_FILE, fingerprint, read_fingerprints, write_fingerprints
    from cds.rules.loader import load_ruleset

    try:
        ruleset = load_ruleset(directory)
        recorded = read_fingerprints(ruleset.directory) or {}
    except (RulesetError, ValueError) as exc:
        click.echo(f"cannot fingerprint the rules: {exc}", err=True)
        raise SystemExit(1) from None
    if update:
        path = write_fingerprints(ruleset)
        click.echo(f"recorded {len(ruleset.rules)} fingerprints in {display_path(path)}")
        return
    same_version_changes = 0
    for rule in sorted(ruleset.rules, key=lambda r: r.spec.id):
        entry = recorded.get(rule.spec.id) or {}
        current = fingerprint(ruleset, rule)
        if entry.get("fingerprint") == current:
            state = "unchanged"
        elif not entry:
            state = f"not recorded in {FINGERPRINT_FILE}"
        elif entry.get("version") == rule.spec.version:
            state = f"CHANGED at the same version {rule.spec.version}: bump it"
            same_version_changes += 1
        else:
            state = f"changed, version {entry.get('version')} -> {rule.spec.version}: record it (--update)"
        click.echo(f"{rule.spec.id:28} {rule.spec.version:8} {current}  {state}")
    if same_version_changes:
        raise SystemExit(1)
