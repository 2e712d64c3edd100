"""``cds bench``: latency percentiles, throughput, memory and the json.loads ratio."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["command"]

NO_BUNDLES = """no folder of patient Bundles to benchmark on.
The default, {default}, exists only beside a development checkout (the project's shared/ folder).
Pass --bundles DIR: a folder of FHIR R4 Bundle JSON files, one patient each. Synthetic patients:
  Synthea (https://github.com/synthetichealth/synthea): ./run_synthea -p 40  -> output/fhir/*.json
  or the samples of this project: fhir_samples/bundles/ in the source repository."""


def _default_bundles(default: Path) -> Path:
    """``../shared/data/synthea-r4`` beside the checkout or the working folder, else a clear usage error."""
    for candidate in (default, Path.cwd().parent / "shared" / "data" / "synthea-r4"):
        if candidate.is_dir():
            return candidate
    raise click.UsageError(NO_BUNDLES.format(default=default))


@click.command("bench")
@click.option("--bundles", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Folder of FHIR R4 Bundles as JSON files (default: ../shared/data/synthea-r4 beside a "
                   "development checkout). Example: --bundles ./bundles")
@click.option("--rounds", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many times each bundle is evaluated. Example: --rounds 10")
@click.option("--now", default="2026-11-01T00:00:00Z", show_default=True,
              help="Evaluation time. Example: --now 2026-06-01T00:00:00Z")
@click.option("--rulesets", type=click.Path(path_type=Path, file_okay=False), default=None, envvar="CDS_RULESETS",
              help="Rulesets folder (default: built-in). Example: --rulesets ./rulesets")
def command(bundles: Path | None, rounds: int, now: str, rulesets: Path | None) -> None:
    """Benchmark the engine over a folder of Bundles (not a test: it prints figures).

    \b
    Example:
      cds bench --rounds 5
    """
    from cds.bench import default_bundle_dir, run_bench
    from cds.engine import Engine

    folder = bundles or _default_bundles(default_bundle_dir())
    report = run_bench(folder, rounds=rounds, now=now, engine=Engine.load(rulesets))
    for line in report.lines():
        click.echo(line)
