"""Shared populations for the screening tests (built once per session from real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cds.rules.loader import load_ruleset
from cds.screen.prefilter import Prefilter

from .exports import NOW, SYNTHEA, patient_bundle, renamed, sample_files, sample_resources, write_ndjson

CDS = Path(sys.executable).with_name("cds")


def run_cds(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The installed ``cds`` entry point as a user runs it (never blocks on a live pipe: run() drains it)."""
    return subprocess.run([str(CDS), *args], capture_output=True, text=True, timeout=timeout, check=False)


def synthea_files() -> list[Path]:
    return sorted(SYNTHEA.glob("*.json")) if SYNTHEA.is_dir() else []


class SamplesExport:
    """A Bulk Data export (NDJSON + manifest.json) and one ``cds evaluate`` request file per sample patient."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "export"
        self.requests = root / "requests"
        self.requests.mkdir(parents=True)
        self.expected_patients: dict[str, Path] = {}  # patient id -> the request file cds evaluate reads
        self.stripped: set[str] = set()  # Synthea patients stripped of every readable resource
        resources: list[dict[str, Any]] = []
        for number, path in enumerate(sample_files()):
            prefix = f"s{number:03d}"
            renamed_resources = renamed(sample_resources(path), prefix)
            body = json.loads(path.read_text(encoding="utf-8"))
            context_pid = (body.get("context") or {}).get("patientId") if "resourceType" not in body else None
            pids = [r["id"] for r in renamed_resources if r["resourceType"] == "Patient"]
            pid = f"{prefix}-{context_pid}" if context_pid else (pids[0] if pids else f"{prefix}-patient")
            request = {"hook": "patient-view", "context": {"patientId": pid, "userId": "Practitioner/t"},
                       "prefetch": {"all": patient_bundle(renamed_resources)}}
            target = self.requests / f"{prefix}.json"
            target.write_text(json.dumps(request), encoding="utf-8")
            self.expected_patients[pid] = target
            resources += renamed_resources
        prefilter = Prefilter(load_ruleset())
        for number, path in enumerate(synthea_files()):
            body = json.loads(path.read_text(encoding="utf-8"))
            pairs = [(e.get("fullUrl"), e["resource"]) for e in body["entry"]]
            kept = [(url, r) for url, r in pairs if not prefilter.readable(r)]
            stripped = renamed(kept, f"plain{number:02d}")
            self.stripped |= {r["id"] for r in stripped if r["resourceType"] == "Patient"}
            resources += stripped
        self.files = write_ndjson(self.folder, resources, split=150)
        manifest = {"transactionTime": NOW, "request": "http://example.org/fhir/$export", "requiresAccessToken": False,
                    "output": [{"type": p.name.split(".")[0],
                                "url": (p.as_uri() if i % 2 == 0 else p.name)} for i, p in enumerate(self.files)],
                    "error": []}
        self.manifest = self.folder / "manifest.json"
        self.manifest.write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture(scope="session")
def samples_export(tmp_path_factory: pytest.TempPathFactory) -> SamplesExport:
    return SamplesExport(tmp_path_factory.mktemp("samples-export"))


@pytest.fixture(scope="session")
def synthea_screen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cds screen`` on the 40 Synthea bundles (real CLI, 2 worker processes, report included)."""
    if not synthea_files():
        pytest.skip(f"{SYNTHEA} not available on this machine")
    out = tmp_path_factory.mktemp("synthea-screen")
    done = run_cds("screen", str(SYNTHEA), "--out", str(out), "--now", NOW, "--workers", "2")
    assert done.returncode == 0, done.stderr
    return out
