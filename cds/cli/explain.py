"""``cds explain PATH``: the facts as the engine saw them and, per rule, why it fired or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cds.fhir.ingest import HOOKS

__all__ = ["command"]


@click.command(name="explain")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--rule", "rule", default=None, metavar="ID", help="Explain only this rule. Example: --rule metformin-renal")
@click.option("--case", "case", default=None, metavar="NAME",
              help="With a rule test file as PATH: the case to explain (part of its name, or its number from 1). "
                   "Example: --case \"eGFR 25\"")
@click.option("--hook", type=click.Choice(HOOKS), default=None,
              help="Hook for a bare Bundle (default patient-view). Example: --hook order-sign")
@click.option("--now", "now", default=None, metavar="ISO8601", help="Evaluation time. Example: --now 2026-11-01")
@click.option("--rulesets", "rulesets", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="CDS_RULESETS", show_envvar=True,
              help="Rulesets folder (default: the built-in rulesets/). Example: --rulesets ./rulesets")
@click.option("--include-drafts", is_flag=True, default=False,
              help="Also run draft rules (as `cds rules test` does). Example: --include-drafts")
@click.option("--all-facts", is_flag=True, default=False,
              help="List every flat fact, false and unknown ones too. Example: --all-facts")
def command(path: Path, rule: str | None, case: str | None, hook: str | None, now: str | None,
            rulesets: Path | None, include_drafts: bool, all_facts: bool) -> None:
    """Explain the evaluation of PATH: a CDS Hooks request, a FHIR Bundle, or a rule test file case.

    \b
    Shows the normalised facts (values with units, dates and source resource ids, values ignored
    and why) and, per rule, whether it fired and, if not, the first condition that failed with
    the patient's value against the threshold.
    Examples:
      cds explain fhir_samples/requests/sir-suspected-fasting-insulin-uiu.json --now 2026-11-01
      cds explain rulesets/rules/metformin-renal.test.yaml --case "eGFR 25"
    """
    from cds.authoring.explain import explain, render_text
    from cds.cli.evaluate import load_input_file
    from cds.engine import Engine
    from cds.rules.loader import load_ruleset

    if path.name.endswith(".test.yaml"):
        from cds.authoring.testfile import TestFileError, load_test_file

        try:
            tests = load_test_file(path)
        except TestFileError as exc:
            raise click.ClickException(str(exc)) from None
        chosen = _pick_case(tests.cases, case)
        payload, instant, rule = chosen.request, chosen.now, rule or chosen.rule
        rulesets = rulesets or path.resolve().parent.parent
        include_drafts = include_drafts or chosen.spec.include_drafts
        click.echo(f"Case: {chosen.name} ({chosen.where}), expected {chosen.spec.expect}")
    else:
        payload, instant = load_input_file(path), now
    engine = Engine(load_ruleset(rulesets, use_cache=True), include_drafts=include_drafts)
    try:
        explanation = explain(engine, payload, hook=hook, now=instant or now, rule=rule)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--rule") from None
    click.echo(render_text(explanation, all_facts=all_facts))


def _pick_case(cases: list[Any], wanted: str | None) -> Any:
    if wanted is None:
        if len(cases) == 1:
            return cases[0]
        listing = "\n".join(f"  {i}. {c.name}" for i, c in enumerate(cases, 1))
        raise click.UsageError(f"the file has {len(cases)} cases; choose one with --case:\n{listing}")
    if wanted.isdigit() and 1 <= int(wanted) <= len(cases):
        return cases[int(wanted) - 1]
    exact = [c for c in cases if c.name.lower() == wanted.lower()]
    hits = exact or [c for c in cases if wanted.lower() in c.name.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = "\n".join(f"  {i}. {c.name}" for i, c in enumerate(cases, 1) if c in hits or not hits)
    if not hits:
        raise click.UsageError(f"no case name contains {wanted!r}; the cases are:\n{listing}")
    raise click.UsageError(f"--case {wanted!r} matches {len(hits)} cases; give more of the name or a number:\n{listing}")
