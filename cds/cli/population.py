"""``cds population generate``: a synthetic FHIR Bulk Data export for screening tests and benchmarks."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click

__all__ = ["command"]

_REPO = Path(__file__).resolve().parents[2]


def _default_synthea() -> Path:
    return _REPO.parent / "shared" / "data" / "synthea-r4"


@click.group(name="population", short_help="Generate synthetic populations (Bulk Data exports).")
def command() -> None:
    """Synthetic populations for `cds screen` tests and benchmarks."""


@command.command(name="generate")
@click.option("--patients", "-n", type=click.IntRange(min=1), required=True, help="Number of patients.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the NDJSON files, manifest.json and labels.csv.")
@click.option("--now", default="2026-11-01T09:00:00Z", show_default=True,
              help="Evaluation time the population is built for (the manifest's transactionTime).")
@click.option("--planted-share", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Share of patients copied from the fhir_samples patient-view samples (labelled).")
@click.option("--synthea", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of Synthea R4 bundles [default: ../shared/data/synthea-r4 next to the checkout].")
@click.option("--samples", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="fhir_samples folder with manifest-*.yaml [default: the checkout's fhir_samples].")
@click.option("--per-file", type=click.IntRange(min=1), default=500_000, show_default=True,
              help="Resources per NDJSON file before Type.001.ndjson is started.")
def generate(patients: int, seed: int, out: Path, now: str, planted_share: float, synthea: Path | None,
             samples: Path | None, per_file: int) -> None:
    """Write a deterministic synthetic FHIR Bulk Data export.

    Ordinary patients are Synthea records (new ids, dates shifted so the latest record is in the last
    year, quantities jittered by up to 5 %, about 11 % with diabetes); a planted share are copies of the
    fhir_samples patients (sir-suspected, lipodystrophy-pattern, receptor-defect-pattern,
    type-b-suspected, close misses, safety cases). labels.csv gives each patient's planted pathway.

    \b
    Examples:
      cds population generate --patients 10000 --seed 1 --out pop10k
      cds screen pop10k/manifest.json --out screen10k --now 2026-11-01T09:00:00Z
    """
    from cds._exceptions import InputError
    from cds.population.generate import generate_population

    try:
        when = dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"--now: {now!r} is not an ISO 8601 date-time") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    synthea_dir = synthea or _default_synthea()
    samples_dir = samples or _REPO / "fhir_samples"
    for label, folder in (("--synthea", synthea_dir), ("--samples", samples_dir)):
        if not folder.is_dir():
            raise InputError(f"{label}: folder {folder} not found")
    started = time.perf_counter()
    result = generate_population(out, patients=patients, seed=seed, synthea_dir=synthea_dir,
                                 samples_dir=samples_dir, now=when, planted_share=planted_share,
                                 per_file=per_file)
    elapsed = time.perf_counter() - started
    click.echo(f"{out}: {result.patients} patients ({result.planted} planted, {result.diabetes} with diabetes), "
               f"{result.total_resources} resources in {len(result.files)} files, {elapsed:.1f} s")
