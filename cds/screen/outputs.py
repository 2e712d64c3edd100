"""The files a screen writes in ``--out DIR``: worklist.csv, worklist.parquet, summary.json, errors.csv.

One writer for every engine (:class:`cds.screen.result.EngineRun` in), so local and Spark outputs are
byte-for-byte comparable. The worklist is sorted by indicator (critical first), then rule id, then
patient id. ``errors.csv`` is written only when some patient could not be evaluated, and the summary
always carries the count, so an incomplete screen never looks complete.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from cds.screen.core import COLUMNS, INDICATOR_ORDER, WorklistRow
from cds.screen.result import EngineRun

__all__ = ["read_worklist_csv", "summarise", "write_outputs", "write_worklist"]

INDICATORS = tuple(sorted(INDICATOR_ORDER, key=INDICATOR_ORDER.__getitem__))


def write_worklist(out_dir: Path, rows: list[WorklistRow]) -> None:
    """worklist.csv and worklist.parquet (all columns strings; empty data_through is null in Parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with (out_dir / "worklist.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["" if getattr(row, c) is None else getattr(row, c) for c in COLUMNS])
    table = pa.table({c: pa.array([getattr(row, c) for row in rows], type=pa.string()) for c in COLUMNS})
    pq.write_table(table, out_dir / "worklist.parquet")


def read_worklist_csv(path: Path) -> list[dict[str, str]]:
    """The worklist rows as dicts (tests, ``cds rules impact``)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def summarise(run: EngineRun, rows: list[WorklistRow], *, engine: str, workers: int, ruleset_digest: str,
              now: str, elapsed_s: float, rule_versions: dict[str, str] | None = None) -> dict[str, Any]:
    """summary.json's content (see the module docstring of :mod:`cds.screen`).

    ``rule_versions`` (rule id -> version of every rule that ran) lists the rules that fired no card
    too, with zero counts: "this rule fires on nobody" is an answer a governance committee needs.
    """
    per_rule: dict[str, dict[str, Any]] = {
        rule_id: {"version": version, **dict.fromkeys(INDICATORS, 0), "cards": 0, "patients": set()}
        for rule_id, version in (rule_versions or {}).items()}
    for row in rows:
        entry = per_rule.setdefault(row.rule_id, {"version": row.rule_version, **dict.fromkeys(INDICATORS, 0),
                                                  "cards": 0, "patients": set()})
        entry[row.indicator] += 1
        entry["cards"] += 1
        entry["patients"].add(row.patient_id)
    rules = {rule_id: {**{k: v for k, v in entry.items() if k != "patients"}, "patients": len(entry["patients"])}
             for rule_id, entry in sorted(per_rule.items())}
    elapsed = max(elapsed_s, 1e-9)
    return {
        "patients": run.patients,
        "resources": run.resources,
        "cards": len(rows),
        "patients_with_cards": len({row.patient_id for row in rows}),
        "cards_by_indicator": dict(Counter(row.indicator for row in rows)),
        "rules": rules,
        "patients_evaluated": run.selected,
        "patients_dropped_by_stage1": run.patients - run.selected,
        "patients_with_errors": len(run.errors),
        "elapsed_s": round(elapsed_s, 3),
        "patients_per_s": round(run.patients / elapsed, 1),
        "resources_per_s": round(run.resources / elapsed, 1),
        "engine": engine,
        "workers": workers,
        "ruleset_digest": ruleset_digest,
        "now": now,
        "stages_s": run.stages_s,
        "details": run.details,
    }


def write_outputs(out_dir: Path, run: EngineRun, *, engine: str, workers: int, ruleset_digest: str, now: str,
                  elapsed_s: float, rule_versions: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the worklist, summary.json and (when needed) errors.csv; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = run.sorted_rows()
    write_worklist(out_dir, rows)
    errors_path = out_dir / "errors.csv"
    if run.errors:
        with errors_path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("patient_id", "kind", "message"))
            for error in sorted(run.errors, key=lambda e: e.patient_id):
                writer.writerow((error.patient_id, error.kind, error.message))
    elif errors_path.exists():
        errors_path.unlink()  # a previous run's errors must not be read as this run's
    summary = summarise(run, rows, engine=engine, workers=workers, ruleset_digest=ruleset_digest, now=now,
                        elapsed_s=elapsed_s, rule_versions=rule_versions)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary
