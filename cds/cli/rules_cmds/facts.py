"""``cds rules facts [DIR] [--json] [--grep WORD]``: the fact vocabulary, without Python."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cds._exceptions import RulesetError
from cds.cli.rules_cmds import rulesets_argument

__all__ = ["command"]


@click.command(name="facts")
@rulesets_argument
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (one object per fact) instead of a table.")
@click.option("--grep", "word", default=None, help="Only facts whose name, description or source contains WORD.")
def command(directory: Path | None, as_json: bool, word: str | None) -> None:
    """List every fact a rule condition may use: name, type, unit, what it means and where it comes from
    (the lab definition and its value sets, or the value set).

    \b
    Examples:
      cds rules facts --grep egfr
      cds rules facts --json > facts.json
    """
    from cds.authoring.facts import fact_rows
    from cds.rules.loader import load_ruleset

    try:
        ruleset = load_ruleset(directory, strict=False)
    except RulesetError as exc:
        click.echo(f"cannot list the facts: {exc}", err=True)
        raise SystemExit(1) from None
    rows = fact_rows(ruleset)
    if word:
        needle = word.lower()
        rows = [r for r in rows if needle in f"{r['name']} {r['description']} {r['source']}".lower()]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    click.echo(f"{'NAME':{width}}  {'TYPE':6}  {'UNIT':15}  DESCRIPTION  [SOURCE]")
    for r in rows:
        extra = f" (one of: {', '.join(r['choices'])})" if r.get("choices") else ""
        click.echo(f"{r['name']:{width}}  {r['type']:6}  {r['unit']:15}  {r['description']}{extra}  [{r['source']}]")
    click.echo(f"{len(rows)} facts")
