"""Every sample in fhir_samples/ runs through `cds evaluate` and yields exactly the expected cards.

The expectations live beside the samples in ``fhir_samples/manifest-*.yaml`` (rule id -> indicator,
the EXACT set: an extra card is as much a failure as a missing one). A sample file that no manifest
lists, or that the README does not describe, fails too, so the catalogue of samples stays honest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cds.codesystems import RULE_SYSTEM

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "fhir_samples"


def _manifest_entries() -> list[dict]:
    entries = []
    for manifest in sorted(SAMPLES.glob("manifest-*.yaml")):
        data = yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}
        for entry in data.get("samples") or []:
            entries.append({**entry, "_manifest": manifest.name})
    return entries


ENTRIES = _manifest_entries()


def _sample_files() -> list[Path]:
    return sorted(p for p in SAMPLES.rglob("*.json"))


def test_every_sample_is_listed_once() -> None:
    listed = [e["file"] for e in ENTRIES]
    assert len(listed) == len(set(listed)), "a sample is listed twice in the manifests"
    on_disk = {str(p.relative_to(SAMPLES)) for p in _sample_files()}
    assert on_disk, "no samples found"
    assert sorted(on_disk - set(listed)) == [], "samples with no expectation in any manifest"
    assert sorted(set(listed) - on_disk) == [], "manifest entries whose file does not exist"


def test_readme_describes_every_sample() -> None:
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    missing = [e["file"] for e in ENTRIES if e["file"] not in readme]
    assert missing == [], "fhir_samples/README.md does not list these samples"


def _run_cli(entry: dict) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cds", "evaluate", str(SAMPLES / entry["file"]), "--now", str(entry["now"]), "--compact"]
    if entry.get("hook") and entry["file"].startswith("bundles/"):
        command += ["--hook", entry["hook"]]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_sample_yields_exact_cards(entry: dict) -> None:
    result = _run_cli(entry)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    got = {card["source"]["topic"]["code"]: card["indicator"] for card in response["cards"]}
    expected = {str(k): str(v) for k, v in (entry.get("expect") or {}).items()}
    assert got == expected, f"{entry['file']} ({entry.get('shows', '')})"
    for card in response["cards"]:
        assert len(card["summary"]) < 140
        assert card["source"]["topic"]["system"] == RULE_SYSTEM
        assert card["source"]["topic"].get("version"), "the rule version must be on every card"
        assert card["detail"].strip()
        if card.get("suggestions"):
            assert card["selectionBehavior"] in ("at-most-one", "any")
