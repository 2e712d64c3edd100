"""Stream a deterministic synthetic FHIR Bulk Data export: NDJSON per type, manifest.json, labels.csv.

Determinism: one ``random.Random(seed)`` drives every choice in patient order, templates are read in
sorted order and serialised with a fixed key order, so the same seed and options give the same bytes.
Memory: one patient is rendered at a time and appended to the open file of its types; a file rolls
over to ``Type.001.ndjson`` after ``per_file`` resources, as bulk exports split large types.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cds.population.templates import EXPORT_TYPES, CompiledTemplate, load_templates

__all__ = ["DIABETES_SHARE", "GenerateResult", "generate_population"]

# Diagnosed and undiagnosed diabetes in US adults, about 11 % (CDC National Diabetes Statistics Report
# 2021: 11.3 %); the share of ordinary patients drawn from a Synthea template with diabetes.
DIABETES_SHARE = 0.11


@dataclass
class GenerateResult:
    """What was written (also in manifest.json)."""

    patients: int
    planted: int
    diabetes: int
    resources: dict[str, int]
    files: list[str]

    @property
    def total_resources(self) -> int:
        return sum(self.resources.values())


class _TypeWriter:
    """Appends to ``Type.NNN.ndjson``, opening the next file after ``per_file`` resources."""

    def __init__(self, out: Path, rtype: str, per_file: int) -> None:
        self.out, self.rtype, self.per_file = out, rtype, per_file
        self.index, self.in_file, self.total = -1, 0, 0
        self.handle: IO[str] | None = None
        self.outputs: list[tuple[str, int]] = []

    def write(self, text: str, count: int) -> None:
        if self.handle is None or self.in_file >= self.per_file:
            self._roll()
        assert self.handle is not None
        self.handle.write(text)
        self.in_file += count
        self.total += count

    def _roll(self) -> None:
        self.close()
        self.index += 1
        self.in_file = 0
        name = f"{self.rtype}.{self.index:03d}.ndjson"
        self.outputs.append((name, 0))
        self.handle = (self.out / name).open("w", encoding="utf-8", newline="\n", buffering=1 << 20)

    def close(self) -> None:
        if self.handle is not None:
            name, _ = self.outputs[-1]
            self.outputs[-1] = (name, self.in_file)
            self.handle.close()
            self.handle = None


def _shifted_dates(template: CompiledTemplate, shift: int) -> list[str]:
    fromordinal = dt.date.fromordinal
    return [fromordinal(day + shift).isoformat() for day in template.dates]


def _jittered(template: CompiledTemplate, rng: random.Random) -> list[str]:
    out = []
    for value, decimals in template.values:
        factor = 1.0 + (rng.random() + rng.random() - 1.0) * 0.05  # triangular, +-5 %
        number = round(value * factor, decimals)
        out.append(str(int(number)) if decimals == 0 else f"{number:.{decimals}f}")
    return out


def generate_population(
    out: Path,
    *,
    patients: int,
    seed: int,
    synthea_dir: Path,
    samples_dir: Path,
    now: dt.datetime,
    planted_share: float = 0.01,
    per_file: int = 500_000,
    history_years: int = 3,
) -> GenerateResult:
    """Write ``patients`` patients into ``out`` (created; existing export files there are replaced).

    Each patient is planted with probability ``planted_share`` (a patient-view sample, drawn stratified
    by its label, dates kept at their distance to ``now``); otherwise ordinary: a Synthea template with diabetes with
    probability ``DIABETES_SHARE``, dates shifted so that its latest record falls 1-365 days before
    ``now``, quantities jittered by up to 5 %.
    """
    if patients < 1:
        raise ValueError("patients must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ndjson"):
        old.unlink()
    ordinary, planted = load_templates(synthea_dir, samples_dir, now, history_years=history_years)
    # Planted patients are stratified by label (each combination of recognition pathways, and "none":
    # close misses and safety cases), so even a small planted share puts every pathway in the labels
    # often enough to measure the screen's sensitivity on it.
    by_label: dict[tuple[str, ...], list[CompiledTemplate]] = {}
    for template in planted:
        by_label.setdefault(template.label, []).append(template)
    planted_groups = [by_label[label] for label in sorted(by_label)]
    with_diabetes = [t for t in ordinary if t.diabetes]
    without = [t for t in ordinary if not t.diabetes] or ordinary
    with_diabetes = with_diabetes or ordinary
    now_day = now.date().toordinal()
    rng = random.Random(seed)
    writers = {rtype: _TypeWriter(out, rtype, per_file) for rtype in EXPORT_TYPES}
    planted_count = diabetes_count = 0
    width = max(7, len(str(patients)))
    with (out / "labels.csv").open("w", encoding="utf-8", newline="") as labels_file:
        labels = csv.writer(labels_file, lineterminator="\n")
        labels.writerow(["patient_id", "label", "kind", "template", "expected"])
        for number in range(patients):
            pid = f"p{number:0{width}d}"
            if rng.random() < planted_share:
                group = planted_groups[rng.randrange(len(planted_groups))]
                template = group[rng.randrange(len(group))]
                shift = template.base_shift
                values: list[str] = []
                planted_count += 1
            else:
                pool = with_diabetes if rng.random() < DIABETES_SHARE else without
                template = pool[rng.randrange(len(pool))]
                shift = now_day - template.last_date - rng.randint(1, 365)
                values = _jittered(template, rng)
            diabetes_count += template.diabetes
            table = [pid, *_shifted_dates(template, shift), *values]
            for rtype, (fmt, pick, count) in template.types.items():
                writers[rtype].write(fmt % pick(table), count)
            expected = ";".join(f"{rule}:{indicator}" for rule, indicator in sorted(template.expected.items()))
            labels.writerow([pid, ";".join(template.label) or "none", template.kind, template.name, expected])
    for writer in writers.values():
        writer.close()
    outputs = [(writer.rtype, name, count) for writer in writers.values() for name, count in writer.outputs]
    manifest = {
        "transactionTime": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "request": f"cds population generate --patients {patients} --seed {seed}",
        "requiresAccessToken": False,
        "output": [{"type": rtype, "url": name, "count": count} for rtype, name, count in outputs],
        "error": [],
        "extension": {"https://sir-cds.org/fhir/population": {
            "seed": seed, "patients": patients, "planted": planted_count, "diabetes": diabetes_count,
            "plantedShare": planted_share, "labels": "labels.csv",
            "note": "output[].url are file names relative to this manifest",
        }},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return GenerateResult(patients=patients, planted=planted_count, diabetes=diabetes_count,
                          resources={w.rtype: w.total for w in writers.values() if w.total},
                          files=[name for _, name, _ in outputs])
