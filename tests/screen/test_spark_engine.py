"""``--engine spark`` really runs on Spark (local[2]) and gives exactly the local engine's worklist,
which is exactly what ``cds evaluate`` gives each patient (issue 11: "one per-patient core")."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from cds.engine import Engine
from cds.population.generate import generate_population
from cds.rules.loader import load_ruleset
from cds.screen.run import run_engine

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
SYNTHEA = REPO.parent / "shared" / "data" / "synthea-r4"
NOW = "2026-11-01T09:00:00Z"


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 patients, a third planted (stratified by pathway), NDJSON split into several files per type."""
    out = tmp_path_factory.mktemp("pop")
    generate_population(out, patients=160, seed=1, synthea_dir=SYNTHEA, samples_dir=REPO / "fhir_samples",
                        now=dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC), planted_share=0.35, per_file=3000)
    return out


def _rows(run: Any) -> list[dict[str, Any]]:
    return [row.as_dict() for row in run.sorted_rows()]


def _patients(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The export regrouped per patient, with the Medications their requests reference."""
    manifest = json.loads((folder / "manifest.json").read_text())
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    medications: dict[str, dict[str, Any]] = {}
    for item in manifest["output"]:
        for line in (folder / item["url"]).read_text().splitlines():
            resource = json.loads(line)
            if resource["resourceType"] == "Medication":
                medications[f"Medication/{resource['id']}"] = resource
            elif resource["resourceType"] == "Patient":
                grouped[resource["id"]].append(resource)
            else:
                owner = (resource.get("subject") or resource.get("patient"))["reference"].split("/")[1]
                grouped[owner].append(resource)
    for resources in grouped.values():
        refs = [r["medicationReference"]["reference"] for r in resources if "medicationReference" in r]
        resources.extend(medications[ref] for ref in dict.fromkeys(refs) if ref in medications)
    return grouped


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources]}


@pytest.mark.timeout(600)
def test_spark_worklist_equals_local_and_cds_evaluate(spark_available: None, population: Path,
                                                      tmp_path: Path) -> None:
    from cds.screen.spark import run_spark

    ruleset = load_ruleset()
    manifest = population / "manifest.json"
    local = run_engine("local", manifest, now=NOW, ruleset=ruleset, workers=2)
    spark = run_spark(manifest, now=NOW, ruleset=ruleset, master="local[2]", partitions=3)
    assert spark.details["executor_processes"] >= 1 and spark.details["partitions"] == 3
    assert not local.errors and not spark.errors
    assert (spark.patients, spark.resources, spark.selected) == (local.patients, local.resources, local.selected) \
        == (160, spark.resources, spark.selected)
    assert spark.details["resources_by_type"] == local.details["resources_by_type"]
    assert _rows(spark) == _rows(local)
    rows = _rows(spark)
    labels = {r["patient_id"]: r for r in csv.DictReader((population / "labels.csv").open())}
    assert {r["rule_id"] for r in rows} >= {"sir-suspected", "lipodystrophy-pattern", "receptor-defect-pattern"}
    # Per patient, the cards cds evaluate's engine gives on that patient's data at the same instant.
    engine = Engine(ruleset)
    by_patient: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for row in rows:
        by_patient[row["patient_id"]].append((row["rule_id"], row["indicator"], row["summary"]))
    grouped = _patients(population)
    assert set(grouped) == set(labels)
    for pid, resources in grouped.items():
        cards = engine.evaluate(_bundle(resources), hook="patient-view", now=NOW).cards
        expected = sorted((c.source.topic.code, c.indicator, c.summary) for c in cards)  # type: ignore[union-attr]
        assert sorted(by_patient.get(pid, [])) == expected, pid
    # ... and the command itself, on a few patients with cards (the CLI is slower: one process each).
    for pid in sorted(by_patient)[:3]:
        path = tmp_path / f"{pid}.json"
        path.write_text(json.dumps(_bundle(grouped[pid])))
        done = subprocess.run([sys.executable, "-m", "cds", "evaluate", str(path), "--now", NOW],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 0, done.stderr
        printed = sorted((c["source"]["topic"]["code"], c["indicator"], c["summary"])
                         for c in json.loads(done.stdout)["cards"])
        assert printed == sorted(by_patient[pid]), pid


@pytest.mark.timeout(600)
def test_spark_on_every_sample_with_medications_and_mixed_manifest_urls(spark_available: None,
                                                                        samples_export: Any) -> None:
    """h11a's export of every sample (Medication resources, 150 resources per file, file:// and relative
    manifest urls, Synthea patients the first pass sets aside): Spark rows equal the local engine's."""
    from cds.screen.spark import run_spark

    ruleset = load_ruleset()
    local = run_engine("local", samples_export.manifest, now=NOW, ruleset=ruleset, workers=2)
    spark = run_spark(samples_export.manifest, now=NOW, ruleset=ruleset, master="local[2]", partitions=2)
    assert spark.details["resources_by_type"].get("Medication"), "no Medication resource: references not exercised"
    assert spark.details["medications"] == local.details["medications"]
    assert (spark.patients, spark.resources, spark.selected) == (local.patients, local.resources, local.selected)
    assert spark.selected < spark.patients  # the first pass set the stripped Synthea patients aside
    assert [(e.patient_id, e.kind) for e in spark.errors] == [(e.patient_id, e.kind) for e in local.errors]
    assert _rows(spark) == _rows(local)


@pytest.mark.timeout(600)
def test_spark_cli_on_synthea_bundles_writes_the_same_outputs(spark_available: None, synthea_screen: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "spark"
    done = subprocess.run([sys.executable, "-m", "cds", "screen", str(SYNTHEA), "--out", str(out), "--now", NOW,
                           "--engine", "spark", "--master", "local[2]"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert (out / "worklist.csv").read_bytes() == (synthea_screen / "worklist.csv").read_bytes()
    local = json.loads((synthea_screen / "summary.json").read_text())
    spark = json.loads((out / "summary.json").read_text())
    assert spark["engine"] == "spark" and local["engine"] == "local"
    for key in ("patients", "resources", "cards", "patients_with_cards", "rules", "patients_evaluated"):
        assert spark[key] == local[key], key
    assert spark["patients"] == 40
    assert (out / "report.html").stat().st_size > 1000 and (out / "worklist.parquet").exists()
