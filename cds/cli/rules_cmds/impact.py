"""``cds rules impact``: what a ruleset change does to a population, before it goes live."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["command"]


@click.command(name="impact")
@click.option("--baseline", "baseline", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The rulesets folder in use now.")
@click.option("--candidate", "candidate", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="The changed rulesets folder.")
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for impact.md, impact.json and the two screens (baseline/, candidate/).")
@click.option("--now", default=None, help="Evaluation time (ISO 8601) [default: now]; fix it to compare runs.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Engine processes [default: one per core].")
@click.option("--master", default=None, help="Spark master URL (--engine spark) [default: local[*]].")
def command(baseline: Path, candidate: Path, input_path: Path, out: Path, now: str | None, engine: str,
            workers: int | None, master: str | None) -> None:
    """Screen INPUT with the BASELINE and the CANDIDATE rulesets and report, per rule, the cards and
    patients under each, cards added and removed, indicator changes, with example patients.

    INPUT is what `cds screen` reads (a Bulk Data export folder or manifest, or a folder of Bundles).

    \b
    Example (raise the metformin eGFR stop threshold from 30 to 35 before go-live):
      cp -r rulesets /tmp/candidate && $EDITOR /tmp/candidate/definitions.yaml
      cds rules impact --baseline rulesets --candidate /tmp/candidate pop10k --out impact --now 2026-11-01
    """
    from cds.screen.impact import run_impact

    impact = run_impact(input_path, out, baseline_dir=baseline, candidate_dir=candidate, now=now, engine=engine,
                        workers=workers, master=master)
    changed = impact.changed_rules
    base, cand = impact.baseline, impact.candidate
    click.echo(f"{base['patients']} patients: baseline {base['cards']} cards, candidate {cand['cards']} cards")
    if not changed:
        click.echo("no rule changes any card")
    for rule in changed:
        data = rule.as_dict()
        transitions = ", ".join(f"{k}: {v}" for k, v in data["indicator_changes"].items())
        click.echo(f"{rule.rule_id}: {rule.baseline_cards} -> {rule.candidate_cards} cards, +{len(rule.added)} "
                   f"-{len(rule.removed)}" + (f", {transitions}" if transitions else "")
                   + (f", {len(rule.summary_changed)} other summaries" if rule.summary_changed else ""))
    click.echo(f"wrote {out / 'impact.md'} and {out / 'impact.json'}")
