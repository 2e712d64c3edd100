"""``cds bench``: latency percentiles, throughput, memory and the json.loads ratio."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["command"]


@click.command("bench")
@click.option("--bundles", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Folder of FHIR Bundles (default: ../shared/data/synthea-r4). Example: --bundles ./bundles")
@click.option("--rounds", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many times each bundle is evaluated. Example: --rounds 10")
@click.option("--now", default="2026-11-01T00:00:00Z", show_default=True, help="Evaluation time. Example: --now 2026-06-01T00:00:00Z")
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

    folder = bundles or default_bundle_dir()
    if not folder.is_dir():
        raise click.UsageError(f"bundle folder {folder} does not exist; pass --bundles")
    report = run_bench(folder, rounds=rounds, now=now, engine=Engine.load(rulesets))
    for line in report.lines():
        click.echo(line)
