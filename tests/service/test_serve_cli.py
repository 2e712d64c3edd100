"""``cds serve``: refuses unsafe or broken setups with a clear message; starts and serves for real."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from cds.cli import cli

from svc_support import stop_process


def run(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["serve", *args], env=env)


def test_open_mode_refuses_a_non_loopback_bind():
    result = run(["--host", "0.0.0.0"], env={"CDS_TRUSTED_ISSUERS": ""})
    assert result.exit_code == 1
    assert "refusing to listen on 0.0.0.0 without authentication" in result.output
    assert "CDS_TRUSTED_ISSUERS" in result.output


def test_invalid_settings_are_reported():
    result = run([], env={"CDS_TRUSTED_ISSUERS": "{not json"})
    assert result.exit_code == 1
    assert "invalid CDS_* settings" in result.output


def test_broken_rulesets_stop_the_start(tmp_path: Path):
    (tmp_path / "valuesets").mkdir()
    (tmp_path / "valuesets" / "broken.yaml").write_text("id: broken\nkind: [unclosed\n")
    result = run(["--rulesets", str(tmp_path), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert "the rulesets do not validate or their tests fail; the service was not started" in result.output
    assert "broken.yaml" in result.output
    assert not (tmp_path / "data").exists()  # nothing was created


def test_failing_rule_tests_stop_the_start(tmp_path: Path):
    import shutil

    rulesets = tmp_path / "rulesets"
    shutil.copytree(Path(__file__).resolve().parents[2] / "rulesets", rulesets,
                    ignore=shutil.ignore_patterns("__pycache__", "conftest.py"))
    definitions = rulesets / "definitions.yaml"
    text = definitions.read_text()
    marker = "  metformin_egfr_stop:\n    value: 30\n"
    assert marker in text
    definitions.write_text(text.replace(marker, "  metformin_egfr_stop:\n    value: 35\n"))
    result = run(["--rulesets", str(rulesets), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert "their tests fail; the service was not started" in result.output
    assert "metformin-renal" in result.output
    assert not (tmp_path / "data").exists()


def test_serve_starts_serves_and_stops(tmp_path: Path):
    """Polls for readiness with a generous bound (a busy 2-core machine can be slow to start) and never
    reads a pipe of a live process: the child's output goes to a file, read once the child has ended."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    args = [sys.executable, "-m", "cds.service", "--port", str(port), "--data-dir", str(tmp_path / "data"),
            "--log-level", "warning"]
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/cds-services", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stop_process(process)
                    raise AssertionError(f"cds serve did not start:\n{log_path.read_text()}") from None
                time.sleep(0.2)
        assert response.status_code == 200
        assert {s["id"] for s in response.json()["services"]} == {"sir-patient-view", "sir-order-select",
                                                                  "sir-order-sign"}
        assert (tmp_path / "data" / "cds.sqlite3").is_file()
    finally:
        stop_process(process)
    output = log_path.read_text()
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/cds-services" in output
    assert "open mode" in output


