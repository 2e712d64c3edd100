"""Authoring safety nets: fingerprints warn on a behaviour change at the same version; `cds rules facts`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from cds.cli import cli


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["rules", *args])
    return result.exit_code, result.output


def _warnings(directory: Path) -> list[str]:
    code, output = _run("validate", str(directory))
    assert code == 0, output
    return [line for line in output.splitlines() if " warning: " in line and "is used by no rule" not in line]


def _bump(rule: Path, version: str) -> None:
    text = rule.read_text()
    old = re.search(r"^version: (\S+)$", text, re.M).group(1)  # type: ignore[union-attr]
    text = text.replace(f"version: {old}", f"version: {version}", 1)
    text = text.replace("changelog:\n", f'changelog:\n  - {{version: "{version}", date: "2026-12-02", change: "test bump"}}\n', 1)
    rule.write_text(text)


def test_a_shared_threshold_change_warns_for_each_rule_that_uses_it(make_ruleset) -> None:  # type: ignore[no-untyped-def]
    directory = make_ruleset("metformin-start", "metformin-renal", "u500-safety")
    code, output = _run("fingerprint", str(directory), "--update")
    assert code == 0 and "recorded 3 fingerprints" in output
    assert _warnings(directory) == []
    definitions = directory / "definitions.yaml"
    text = definitions.read_text()
    assert "  metformin_egfr_stop:\n    value: 30\n" in text
    definitions.write_text(text.replace("  metformin_egfr_stop:\n    value: 30\n", "  metformin_egfr_stop:\n    value: 25\n"))
    warnings = _warnings(directory)
    changed = sorted(re.search(r"\[(\S+)\]", w).group(1) for w in warnings)  # type: ignore[union-attr]
    assert changed == ["metformin-renal", "metformin-start"]  # u500-safety does not use it
    start = directory / "rules" / "metformin-start.yaml"
    version = re.search(r"^version: (\S+)$", start.read_text(), re.M).group(1)  # type: ignore[union-attr]
    version_line = start.read_text().splitlines().index(f"version: {version}") + 1
    assert any(f"metformin-start.yaml:{version_line}:" in w and f"version is still {version}" in w for w in warnings)
    code, output = _run("fingerprint", str(directory))
    assert code == 1 and f"CHANGED at the same version {version}" in output

    _bump(start, "1.3.0")
    _bump(directory / "rules" / "metformin-renal.yaml", "9.9.9")
    warnings = _warnings(directory)
    assert len(warnings) == 2 and all("is not recorded in fingerprints.json" in w for w in warnings)
    _run("fingerprint", str(directory), "--update")
    assert _warnings(directory) == []
    recorded = json.loads((directory / "fingerprints.json").read_text())
    assert recorded["metformin-start"]["version"] == "1.3.0"


def test_card_wording_counts_documentation_does_not(make_ruleset) -> None:  # type: ignore[no-untyped-def]
    directory = make_ruleset("u500-safety")
    _run("fingerprint", str(directory), "--update")
    rule = directory / "rules" / "u500-safety.yaml"
    original = rule.read_text()
    rule.write_text(original.replace("limitations: >", "limitations: >\n  Edited for the test.", 1))
    assert _warnings(directory) == []
    rule.write_text(original.replace("summary: >-\n", "summary: >-\n      Reworded:\n", 1))
    assert original != rule.read_text()
    warnings = _warnings(directory)
    assert len(warnings) == 1 and "card text or logic changed" in warnings[0]


def test_no_fingerprint_file_no_check_and_a_missing_rule_warns(make_ruleset) -> None:  # type: ignore[no-untyped-def]
    directory = make_ruleset("u500-safety")
    assert _warnings(directory) == []
    (directory / "fingerprints.json").write_text("{}\n")
    warnings = _warnings(directory)
    assert len(warnings) == 1 and "no fingerprint recorded" in warnings[0]


def test_the_shipped_fingerprints_are_current() -> None:
    code, output = _run("fingerprint")
    assert code == 0, output
    assert "CHANGED" not in output and "not recorded" not in output


def test_facts_table_and_json() -> None:
    code, output = _run("facts", "--grep", "egfr")
    assert code == 0
    lines = output.splitlines()
    assert lines[0].split()[:3] == ["NAME", "TYPE", "UNIT"]
    egfr = next(line for line in lines if line.startswith("egfr "))
    assert "number" in egfr and "mL/min/1.73 m2" in egfr and "lab egfr" in egfr
    assert all("egfr" in line.lower() for line in lines[1:-1])
    code, output = _run("facts", "--json")
    rows = {row["name"]: row for row in json.loads(output)}
    assert rows["egfr"]["ucum"] == "mL/min/{1.73_m2}" and rows["egfr"]["valuesets"] == ["egfr"]
    assert rows["sex"]["choices"] and rows["sex"]["type"] == "string"
    assert rows["metformin_allergy"]["source"].startswith("medication value set metformin")
    assert rows["heart_failure_active"]["type"] == "bool"
