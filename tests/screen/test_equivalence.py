"""The worklist equals per-patient ``cds evaluate`` on every patient (issue 11, "one per-patient core").

Both input shapes: the folder of 40 Synthea Bundles (``urn:uuid:`` references) and a Bulk Data export
(NDJSON, split files, ``Patient/<id>`` references) built from every sample of ``fhir_samples/``. The
screen runs as the installed ``cds screen`` with real worker processes; ``cds evaluate`` runs per
patient through the CLI command itself.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from cds.cli import cli
from cds.screen.core import COLUMNS, INDICATOR_ORDER
from cds.screen.outputs import read_worklist_csv

from .conftest import SamplesExport, run_cds, synthea_files
from .exports import NOW

Card = tuple[str, str, str, str]  # rule id, version, indicator, summary


def evaluate_cards(path: Path) -> set[Card]:
    """What ``cds evaluate PATH --now NOW`` answers, as (rule, version, indicator, summary)."""
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--now", NOW, "--compact"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cards = json.loads(result.stdout)["cards"]
    return {(c["source"]["topic"]["code"], c["source"]["topic"]["version"], c["indicator"], c["summary"]) for c in cards}


def worklist_cards(out: Path) -> dict[str, set[Card]]:
    rows = read_worklist_csv(out / "worklist.csv")
    found: dict[str, set[Card]] = defaultdict(set)
    for row in rows:
        found[row["patient_id"]].add((row["rule_id"], row["rule_version"], row["indicator"], row["summary"]))
    return found


def test_synthea_worklist_equals_cds_evaluate_for_every_patient(synthea_screen: Path) -> None:
    worklist = worklist_cards(synthea_screen)
    seen = set()
    for path in synthea_files():
        body = json.loads(path.read_text(encoding="utf-8"))
        pid = next(e["resource"]["id"] for e in body["entry"] if e["resource"]["resourceType"] == "Patient")
        seen.add(pid)
        assert worklist.get(pid, set()) == evaluate_cards(path), path.name
    assert set(worklist) <= seen
    assert sum(len(cards) for cards in worklist.values()) > 0, "expected some cards on Synthea"
    summary = json.loads((synthea_screen / "summary.json").read_text())
    assert summary["patients"] == 40
    assert summary["resources"] == sum(len(json.loads(p.read_text())["entry"]) for p in synthea_files())


def _screen(input_path: Path, out: Path) -> Path:
    done = run_cds("screen", str(input_path), "--out", str(out), "--now", NOW, "--workers", "2", "--no-report")
    assert done.returncode == 0, done.stderr
    return out


def test_ndjson_export_worklist_equals_cds_evaluate_for_every_patient(samples_export: SamplesExport,
                                                                      tmp_path: Path) -> None:
    assert any(".001." in p.name for p in samples_export.files), "the export should have split files"
    out = _screen(samples_export.folder, tmp_path / "out")
    worklist = worklist_cards(out)
    fired = 0
    for pid, request in samples_export.expected_patients.items():
        expected = evaluate_cards(request)
        fired += len(expected)
        assert worklist.get(pid, set()) == expected, (pid, request)
    assert fired > 50, "the samples should fire many cards"
    assert not set(worklist) & samples_export.stripped
    assert set(worklist) <= set(samples_export.expected_patients)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patients"] == len(samples_export.expected_patients) + len(samples_export.stripped)
    assert summary["patients_dropped_by_stage1"] >= len(samples_export.stripped)
    assert summary["patients_with_errors"] == 0


def test_manifest_input_gives_the_same_outputs(samples_export: SamplesExport, tmp_path: Path) -> None:
    folder = _screen(samples_export.folder, tmp_path / "folder")
    manifest = _screen(samples_export.manifest, tmp_path / "manifest")
    assert (folder / "worklist.csv").read_bytes() == (manifest / "worklist.csv").read_bytes()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (folder, manifest))
    for key in ("patients", "resources", "cards", "patients_with_cards", "rules", "patients_evaluated"):
        assert a[key] == b[key], key


def test_worklist_files_are_sorted_complete_and_agree(synthea_screen: Path) -> None:
    rows = read_worklist_csv(synthea_screen / "worklist.csv")
    assert rows and list(rows[0]) == list(COLUMNS)
    order = [(INDICATOR_ORDER[r["indicator"]], r["rule_id"], r["patient_id"]) for r in rows]
    assert order == sorted(order)
    table = pq.read_table(synthea_screen / "worklist.parquet").to_pylist()
    assert [{k: (v or "") for k, v in row.items()} for row in table] == rows
    for row in rows:
        assert row["evidence"], row  # every card names the records behind it
        assert all("/" in ref for ref in row["evidence"].split(";"))
        assert row["data_through"][:4].isdigit()
    summary = json.loads((synthea_screen / "summary.json").read_text())
    for key in ("patients", "resources", "cards", "patients_with_cards", "rules", "elapsed_s", "patients_per_s",
                "resources_per_s", "engine", "workers", "ruleset_digest", "now"):
        assert key in summary, key
    assert summary["cards"] == len(rows)
    assert summary["engine"] == "local" and summary["workers"] == 2
    assert sum(c["cards"] for c in summary["rules"].values()) == len(rows)
    assert len(summary["rules"]) == 19  # every rule that ran, those that fired nothing with zeros
    assert summary["rules"]["sir-suspected"]["cards"] == 0 or any(r["rule_id"] == "sir-suspected" for r in rows)
    assert summary["now"].startswith("2026-11-01T09:00:00")
