"""``cds screen``: run the SIR pathways over a whole population and write a worklist and a report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["ClickProgress", "command"]


class ClickProgress:
    """A click progress bar per stage on a terminal; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def start(self, label: str, total: int) -> None:
        self.finish()
        if self.enabled:
            self._bar = click.progressbar(length=max(1, total), label=f"{label:<10}", file=sys.stderr,
                                          show_pos=label != "reading", show_percent=True)
            self._bar.__enter__()

    def advance(self, amount: int) -> None:
        if self._bar is not None:
            self._bar.update(amount)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@click.command("screen")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for worklist.csv, worklist.parquet, summary.json and report.html. Example: --out screen-out")
@click.option("--now", default=None, metavar="ISO8601",
              help="Evaluation time for every patient (default: now). Example: --now 2026-11-01T09:00:00Z")
@click.option("--rulesets", type=click.Path(path_type=Path, file_okay=False), default=None, envvar="CDS_RULESETS",
              show_envvar=True, help="Rulesets folder (default: the built-in rulesets/). Example: --rulesets ./rulesets")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="local: engine worker processes on this machine; spark: Apache Spark (pip install "
                   "'sir-cds[spark]'). Example: --engine spark")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Engine worker processes (local) or Spark partitions hint (default: one per core). Example: --workers 2")
@click.option("--master", default=None, help="Spark master URL (default local[*]). Example: --master spark://host:7077")
@click.option("--include-drafts", is_flag=True, default=False,
              help="Also run rules whose status is draft (never by default). Example: --include-drafts")
@click.option("--no-report", is_flag=True, default=False,
              help="Skip report.html (the worklist and summary only). Example: --no-report")
def command(input_path: Path, out_dir: Path, now: str | None, rulesets: Path | None, engine: str,
            workers: int | None, master: str | None, include_drafts: bool, no_report: bool) -> None:
    """Evaluate every patient of INPUT as on patient-view at --now and write a worklist.

    INPUT is a FHIR Bulk Data export (a folder of NDJSON files such as Observation.000.ndjson, or its
    manifest JSON with output[].url pointing at local files) or a folder of FHIR Bundles (Synthea).
    A first pass, derived from the loaded rules, sets aside the patients whose records could meet no
    card's conditions; the others go through the same evaluation as `cds evaluate`.

    \b
    Examples:
      cds screen ../shared/data/synthea-r4 --out screen-out --now 2026-11-01
      cds screen export/manifest.json --out screen-out --workers 2
      cds screen export/ --out screen-out --engine spark --master local[2]
    Exit status: 0 when written (patients that could not be evaluated are listed in errors.csv and
    counted in summary.json, with a warning here); 2 for unusable input (the message names the file and
    line); 3 when the rulesets do not load.
    """
    from cds.fhir.dates import parse_now
    from cds.screen.run import screen

    try:
        parse_now(now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--now") from None
    progress = ClickProgress(sys.stderr.isatty())
    try:
        summary = screen(input_path, out_dir, now=now, rulesets=rulesets, engine=engine, workers=workers,
                         master=master, include_drafts=include_drafts, progress=progress, report=not no_report)
    finally:
        progress.finish()
    click.echo(f"{summary['patients']} patients, {summary['resources']} resources: {summary['cards']} cards for "
               f"{summary['patients_with_cards']} patients ({summary['patients_evaluated']} evaluated fully, "
               f"{summary['patients_dropped_by_stage1']} set aside by the first pass) in {summary['elapsed_s']:.1f} s "
               f"({summary['patients_per_s']:.0f} patients/s, {summary['resources_per_s']:.0f} resources/s, "
               f"{summary['engine']}, {summary['workers']} workers)")
    silent = []
    for rule_id, counts in summary["rules"].items():
        if not counts["cards"]:
            silent.append(rule_id)
            continue
        shown = ", ".join(f"{counts[k]} {k}" for k in ("critical", "warning", "info") if counts[k])
        click.echo(f"  {rule_id:<28} {shown} ({counts['patients']} patients)")
    if silent:
        click.echo(f"  no card: {', '.join(silent)}")
    written = ["worklist.csv", "worklist.parquet", "summary.json"] + ([] if no_report else ["report.html"])
    click.echo(f"wrote {', '.join(str(out_dir / name) for name in written)}")
    if summary["patients_with_errors"]:
        click.echo(f"warning: {summary['patients_with_errors']} patient(s) could not be evaluated: see "
                   f"{out_dir / 'errors.csv'}", err=True)
