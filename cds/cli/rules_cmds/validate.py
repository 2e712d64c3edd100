"""``cds rules validate [DIR]``: every problem at once, each with file, line and rule id."""

from __future__ import annotations

from pathlib import Path

import click

from cds._exceptions import RulesetError
from cds.cli.rules_cmds import display_path, rulesets_argument

__all__ = ["command"]


@click.command(name="validate")
@rulesets_argument
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1 on any warning).")
def command(directory: Path | None, strict: bool) -> None:
    """Check every rule, value set and test file in DIR (default: the built-in rulesets/).

    Prints one line per problem, FILE:LINE: [RULE] SEVERITY: MESSAGE, then a count.
    Exit status 1 when there is any error (or any warning with --strict), else 0.
    """
    from cds.authoring.gate import validate_ruleset
    from cds.rules.loader import load_ruleset

    try:
        ruleset = load_ruleset(directory, strict=False)
    except RulesetError as exc:  # value sets or the folder itself unusable: nothing else can be checked
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    validate_ruleset(ruleset)  # loading checks the schema only; every deeper check runs here
    for issue in sorted(ruleset.issues, key=lambda i: (i.severity != "error", i.file, i.line)):
        rule = f" [{issue.rule}]" if issue.rule else ""
        click.echo(f"{display_path(issue.file)}:{issue.line}:{rule} {issue.severity}: {issue.message}")
    errors = len(ruleset.errors)
    warnings = len(ruleset.issues) - errors
    click.echo(f"{len(ruleset.rules)} rules, {errors} errors, {warnings} warnings (digest {ruleset.digest})")
    if errors or (strict and warnings):
        raise SystemExit(1)
