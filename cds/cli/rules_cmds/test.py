"""``cds rules test [DIR]``: run every rule's test cases and show expected vs actual."""

from __future__ import annotations

from pathlib import Path

import click

from cds._exceptions import RulesetError
from cds.cli.rules_cmds import rulesets_argument

__all__ = ["command"]


@click.command(name="test")
@rulesets_argument
@click.option("--rule", "rule", default=None, metavar="ID", help="Only this rule's tests. Example: --rule metformin-renal")
@click.option("-v", "--verbose", is_flag=True, help="List passing cases too.")
def command(directory: Path | None, rule: str | None, verbose: bool) -> None:
    """Run the cases in rules/<id>.test.yaml through the real engine (draft rules included).

    Failures show a diff of expected vs actual and, per card, the first condition that failed.
    Exit status 1 when the rulesets do not validate or any case fails, else 0.
    """
    from cds.authoring.runner import default_jobs, run_tests
    from cds.authoring.gate import load_validated

    try:
        ruleset = load_validated(directory)
    except RulesetError as exc:
        click.echo(f"cannot run tests: {exc}", err=True)
        raise SystemExit(1) from None
    if rule is not None and rule not in {r.spec.id for r in ruleset.rules}:
        raise click.BadParameter(f"no rule {rule!r} in {ruleset.directory}", param_hint="--rule")
    report = run_tests(ruleset, rule=rule, jobs=default_jobs())  # two processes on two cores
    click.echo(report.render(verbose=verbose))
    if not report.ok:
        raise SystemExit(1)
