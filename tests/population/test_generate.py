"""``cds population generate``: deterministic bytes, unique ids, resolvable references, honest labels."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from cds.engine import Engine

REPO = Path(__file__).resolve().parents[2]
SYNTHEA = REPO.parent / "shared" / "data" / "synthea-r4"
NOW = "2026-11-01T09:00:00Z"


def _generate(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cds", "population", "generate", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _resources(folder: Path) -> list[dict[str, Any]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    out = []
    for item in manifest["output"]:
        lines = (folder / item["url"]).read_text().splitlines()
        assert len(lines) == item["count"], item
        for line in lines:
            resource = json.loads(line)
            assert resource["resourceType"] == item["type"]
            out.append(resource)
    return out


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pop")
    done = _generate(out, "--patients", "300", "--seed", "7", "--planted-share", "0.3", "--per-file", "4000")
    assert done.returncode == 0, done.stderr
    assert "300 patients" in done.stdout
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(population: Path, tmp_path: Path) -> None:
    again = _generate(tmp_path / "again", "--patients", "300", "--seed", "7", "--planted-share", "0.3",
                      "--per-file", "4000")
    assert again.returncode == 0, again.stderr
    assert _digest(tmp_path / "again") == _digest(population)
    other = _generate(tmp_path / "other", "--patients", "300", "--seed", "8", "--planted-share", "0.3",
                      "--per-file", "4000")
    assert other.returncode == 0, other.stderr
    assert _digest(tmp_path / "other")["Patient.000.ndjson"] != _digest(population)["Patient.000.ndjson"]


def test_ids_unique_references_resolve_files_split(population: Path) -> None:
    resources = _resources(population)
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    assert len(keys) == len(set(keys))
    known = set(keys)
    patients = {k for k in keys if k.startswith("Patient/")}
    assert len(patients) == 300
    for resource in resources:
        for reference in _references(resource):
            assert reference.startswith("#") or reference in known, (resource["id"], reference)
        if resource["resourceType"] != "Patient" and resource["resourceType"] != "Medication":
            owner = (resource.get("subject") or resource.get("patient") or {}).get("reference")
            assert owner in patients, resource["id"]
            assert resource["id"].startswith(owner.split("/")[1] + "-")
    manifest = json.loads((population / "manifest.json").read_text())
    assert manifest["transactionTime"] == NOW
    assert any(o["url"] == "Observation.001.ndjson" for o in manifest["output"]), "per-file split not exercised"


def test_labels_and_shares(population: Path) -> None:
    rows = list(csv.DictReader((population / "labels.csv").open()))
    assert [r["patient_id"] for r in rows] == sorted(r["patient_id"] for r in rows)
    assert len(rows) == 300
    kinds = Counter(r["kind"] for r in rows)
    assert 60 <= kinds["planted"] <= 120  # 30 % planted share
    labelled = Counter(label for r in rows for label in r["label"].split(";") if label != "none")
    assert labelled["sir-suspected"] >= 3
    assert all(r["label"] == "none" for r in rows if r["kind"] == "ordinary")
    manifest = json.loads((population / "manifest.json").read_text())
    share = manifest["extension"]["https://sir-cds.org/fhir/population"]["diabetes"] / 300
    assert 0.05 < share < 0.35  # 11 % of the ordinary patients plus the diabetic samples


def test_planted_patients_get_exactly_the_cards_their_sample_expects(population: Path) -> None:
    """The labels are true: every planted patient, as exported, gives its sample's expected cards."""
    _check_planted(population, NOW)


def test_planted_patients_keep_their_meaning_at_another_now(tmp_path: Path) -> None:
    """--now moves the planted patients' dates with it (whole days), so their cards are the same."""
    later = "2027-03-15T09:00:00Z"
    done = _generate(tmp_path / "later", "--patients", "60", "--seed", "3", "--planted-share", "1", "--now", later)
    assert done.returncode == 0, done.stderr
    rows = _check_planted(tmp_path / "later", later)
    assert len(rows) == 60
    first_obs = json.loads((tmp_path / "later" / "Observation.000.ndjson").read_text().splitlines()[0])
    assert first_obs["effectiveDateTime"][:4] in {"2026", "2027"}


def _check_planted(population: Path, now: str) -> list[dict[str, str]]:
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    medications = []
    for resource in _resources(population):
        if resource["resourceType"] == "Patient":
            by_patient[resource["id"]].insert(0, resource)
        elif resource["resourceType"] == "Medication":
            medications.append(resource)
        else:
            owner = (resource.get("subject") or resource.get("patient"))["reference"].split("/")[1]
            by_patient[owner].append(resource)
    engine = Engine.load()
    rows = [r for r in csv.DictReader((population / "labels.csv").open()) if r["kind"] == "planted"]
    for row in rows:
        entries = [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r}
                   for r in by_patient[row["patient_id"]] + [m for m in medications
                                                             if m["id"].startswith(row["patient_id"] + "-")]]
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        cards = {c.source.topic.code: c.indicator  # type: ignore[union-attr]
                 for c in engine.evaluate(bundle, hook="patient-view", now=now).cards}
        expected = dict(item.split(":") for item in row["expected"].split(";") if item)
        assert cards == expected, (row["template"], row["patient_id"])
    return rows


def test_missing_synthea_folder_is_a_clear_error(tmp_path: Path) -> None:
    done = _generate(tmp_path / "x", "--patients", "3", "--synthea", str(tmp_path))
    assert done.returncode == 2
    assert "no Synthea bundles" in done.stderr and str(tmp_path) in done.stderr
