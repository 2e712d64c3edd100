"""Bad input gives a clear message naming the file and line (exit 2), never a traceback or a silent skip;
a patient whose own data are unusable is reported in errors.csv and counted, and the others are screened."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import run_cds
from .exports import NOW, SAMPLES, renamed, sample_resources, write_ndjson


def _fails(*args: str) -> str:
    done = run_cds("screen", *args, "--now", NOW, "--workers", "1")
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stderr.strip()


def test_a_line_that_is_not_json_is_named_by_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"p1"}\n\n{"resourceType": "Patient", "id": \n')
    message = _fails(str(folder), "--out", str(tmp_path / "out"))
    assert message.startswith(f"error: {folder / 'Patient.ndjson'}:3: not JSON")
    assert not (tmp_path / "out" / "worklist.csv").exists()


def test_a_line_that_is_not_a_resource_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Observation.000.ndjson").write_text('{"resourceType":"Observation","id":"o1"}\n[1, 2]\n')
    assert f"{folder / 'Observation.000.ndjson'}:2: not a FHIR resource" in _fails(str(folder), "--out", str(tmp_path / "o"))


def test_a_patient_without_id_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text('{"resourceType":"Patient","gender":"female"}\n')
    assert "Patient.ndjson:1: Patient without an id" in _fails(str(folder), "--out", str(tmp_path / "o"))


def test_manifest_problems_are_named(tmp_path: Path) -> None:
    remote = tmp_path / "remote.json"
    remote.write_text(json.dumps({"output": [{"type": "Patient", "url": "https://ehr.example/Patient.ndjson"}]}))
    assert "output[0].url https://ehr.example/Patient.ndjson is remote" in _fails(str(remote), "--out", str(tmp_path / "o"))
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"output": [{"type": "Patient", "url": "Patient.ndjson"}]}))
    assert f"{missing}: output[0].url points at {tmp_path / 'Patient.ndjson'}, which does not exist" in _fails(
        str(missing), "--out", str(tmp_path / "o"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"output": [\n')
    assert f"{broken}: line 2: not JSON" in _fails(str(broken), "--out", str(tmp_path / "o"))


def test_missing_or_empty_inputs_and_non_bundles(tmp_path: Path) -> None:
    assert "no such file or folder" in _fails(str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no .ndjson files (Bulk Data export) and no .json Bundles found" in _fails(str(empty), "--out", str(tmp_path / "o"))
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    (bundles / "a.json").write_text(json.dumps({"resourceType": "Patient", "id": "x"}))
    assert f"{bundles / 'a.json'}: expected a FHIR Bundle, found Patient" in _fails(str(bundles), "--out", str(tmp_path / "o"))


def test_bad_now_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cds("screen", str(tmp_path), "--out", str(tmp_path / "o"), "--now", "yesterday")
    assert done.returncode == 2 and "Invalid value for --now" in done.stderr


def test_spark_engine_without_pyspark_is_said_plainly(tmp_path: Path) -> None:
    """Without the optional extra, --engine spark names the extra to install (exit 3), never a traceback.

    PySpark is installed here (CI installs the extra), so the interpreter is told it is absent the way
    Python sees a missing package: ``sys.modules['pyspark'] = None`` makes ``import pyspark`` fail.
    """
    export = tmp_path / "export"
    write_ndjson(export, renamed(sample_resources(SAMPLES / "requests/sir-suspected-fasting-insulin-uiu.json"), "p"))
    code = ("import sys; sys.modules['pyspark'] = None; sys.modules['py4j'] = None; "
            "from cds.cli import main; sys.argv[0] = 'cds'; main()")
    done = subprocess.run([sys.executable, "-c", code, "screen", str(export), "--out", str(tmp_path / "o"),
                           "--engine", "spark", "--now", NOW], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 3, done.stderr
    assert "--engine spark needs PySpark: pip install 'sir-cds[spark]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_patient_with_invalid_data_is_reported_and_the_others_are_screened(tmp_path: Path) -> None:
    good = renamed(sample_resources(SAMPLES / "requests/sir-suspected-fasting-insulin-uiu.json"), "good")
    bad = renamed(sample_resources(SAMPLES / "requests/sir-suspected-fasting-insulin-uiu.json"), "bad")
    broken = next(r for r in bad if r["resourceType"] == "Observation" and "valueQuantity" in r)
    broken["valueQuantity"]["value"] = "thirty-eight"
    write_ndjson(tmp_path / "export", good + bad)
    out = tmp_path / "out"
    done = run_cds("screen", str(tmp_path / "export"), "--out", str(out), "--now", NOW, "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "warning: 1 patient(s) could not be evaluated" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patients_with_errors"] == 1 and summary["patients"] == 2
    errors = (out / "errors.csv").read_text().splitlines()
    assert len(errors) == 2
    assert errors[1].startswith("bad-") and f"Observation/{broken['id']}" in errors[1] and "input" in errors[1]
    worklist = (out / "worklist.csv").read_text()
    assert "good-" in worklist and "sir-suspected" in worklist and "bad-" not in worklist
    assert "could not be evaluated" in (out / "report.html").read_text()
