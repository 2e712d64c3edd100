"""The local engine's robustness and terminal behaviour, with real worker processes and a real pty."""

from __future__ import annotations

import os
import pickle
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from cds.rules.loader import load_ruleset
from cds.screen.core import PatientData
from cds.screen.ingest import patient_key
from cds.screen.local import _Evaluator
from cds.screen.progress import NullProgress
from cds.workers import WorkerPool
from cds.workers.pool import WorkerSpec

from .conftest import CDS
from .exports import NOW, SAMPLES, SYNTHEA, renamed, sample_resources


def test_references_name_the_same_patient_in_every_style() -> None:
    def obs(ref: str) -> dict:
        return {"resourceType": "Observation", "subject": {"reference": ref}}

    assert patient_key(obs("Patient/p-1")) == "p-1"
    assert patient_key(obs("urn:uuid:5c55a67c-fb41")) == "5c55a67c-fb41"
    assert patient_key(obs("https://ehr.example/fhir/Patient/p-1/_history/3")) == "p-1"
    assert patient_key(obs("urn:uuid:abc"), {"urn:uuid:abc": "p-9"}) == "p-9"  # Patient fullUrl != id
    assert patient_key({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p-2"}}) == "p-2"
    assert patient_key(obs("Group/g-1")) is None
    assert patient_key({"resourceType": "Patient", "id": "p-3"}) == "p-3"


def _patient(name: str, prefix: str) -> PatientData:
    resources = renamed(sample_resources(SAMPLES / name), prefix)
    pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    return PatientData(pid, [(None, r) for r in resources], "2026-09-01")


def test_a_patient_that_crashes_a_worker_is_reported_and_its_batch_mates_are_screened(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the worker processes import the test handler as this package does (pytest puts tests/ on the path)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    package = __name__.rpartition(".")[0]
    ruleset = load_ruleset()
    spec = WorkerSpec(pickle.dumps(ruleset), ruleset.digest, handler=f"{package}.crashing_handler:handler")
    pool = WorkerPool(spec, size=2, timeout_s=120, max_pending=16).start()
    try:
        assert pool.wait_ready(timeout=120)
        good = [_patient("requests/sir-suspected-fasting-insulin-uiu.json", f"g{n}") for n in range(3)]
        crash = PatientData("crash-me", list(good[0].entries), None)
        evaluator = _Evaluator(pool, NOW, in_flight=2, progress=NullProgress())
        evaluator.run(iter([[good[0], crash, good[1]], [good[2]]]))
    finally:
        pool.close(graceful=False)
    assert [(e.patient_id, e.kind) for e in evaluator.errors] == [("crash-me", "engine")]
    assert "WorkerCrashed" in evaluator.errors[0].message
    assert sorted({row.patient_id for row in evaluator.rows}) == sorted(p.patient_id for p in good)
    assert all(row.rule_id == "sir-suspected" for row in evaluator.rows)
    assert evaluator.evaluated == 4
    assert pool.metrics["crashes"] >= 1


def _run_on_pty(args: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run with stderr (and stdout) on a pseudo-terminal; read it without ever blocking on a live pipe."""
    master, slave = pty.openpty()
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        code = process.wait(timeout=60)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_on_a_terminal_and_silence_otherwise(tmp_path: Path) -> None:
    args = [str(CDS), "screen", str(SYNTHEA), "--now", NOW, "--workers", "1", "--no-report"]
    code, shown = _run_on_pty([*args, "--out", str(tmp_path / "tty")])
    assert code == 0, shown
    assert "reading" in shown and "evaluating" in shown and "100%" in shown
    piped = subprocess.run([*args, "--out", str(tmp_path / "pipe")], capture_output=True, text=True, timeout=300,
                           check=False)
    assert piped.returncode == 0 and piped.stderr == ""
    assert "reading" not in piped.stdout


def test_screen_help_documents_every_option_with_an_example() -> None:
    import click
    from click.testing import CliRunner

    from cds.cli import cli
    from cds.cli.screen import command

    text = CliRunner().invoke(cli, ["screen", "--help"]).output
    assert "cds screen ../shared/data/synthea-r4" in text
    for option in command.params:
        if isinstance(option, click.Option) and option.name != "help":
            assert all(flag in text for flag in option.opts), option.opts
            assert "Example" in (option.help or ""), f"{option.opts[0]} has no example in its help"
