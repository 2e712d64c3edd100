"""``cds rules impact`` on a threshold change: metformin eGFR stop threshold 30 -> 35.

Input: six copies of the active-metformin sample with their latest eGFR at 29, 30, 32, 34.9, 35 and
40 mL/min/1.73 m2, plus the 40 Synthea bundles (ordinary patients). Under the candidate, the patients at
30, 32 and 34.9 move from the "review" (info) to the "stop" (warning) card of metformin-renal; nothing
else may change a card (a summary that quotes the threshold may change its wording).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cds.screen.impact import compare

REPO = Path(__file__).resolve().parents[2]
SYNTHEA = REPO.parent / "shared" / "data" / "synthea-r4"
SAMPLE = REPO / "fhir_samples" / "requests" / "metformin-renal-active-egfr29.json"
NOW = "2026-11-01T09:00:00Z"
EGFRS = {"29": 29, "30": 30, "32": 32, "34-9": 34.9, "35": 35, "40": 40}


def _variant(tag: str, egfr: float) -> dict[str, object]:
    request = json.loads(SAMPLE.read_text().replace("mr-04", f"egfr-{tag}"))
    entries = []
    for value in request["prefetch"].values():
        resources = [e["resource"] for e in value.get("entry", [])] if value.get("resourceType") == "Bundle" else [value]
        for resource in resources:
            if resource["id"] == f"egfr-{tag}-obs2":
                resource["valueQuantity"]["value"] = egfr
            entries.append({"fullUrl": f"{resource['resourceType']}/{resource['id']}", "resource": resource})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


@pytest.fixture(scope="module")
def impact_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("impact")
    data = root / "input"
    data.mkdir()
    for tag, egfr in EGFRS.items():
        (data / f"egfr-{tag}.json").write_text(json.dumps(_variant(tag, egfr)))
    for bundle in sorted(SYNTHEA.glob("*.json")):
        (data / bundle.name).symlink_to(bundle)
    candidate = root / "candidate"
    shutil.copytree(REPO / "rulesets", candidate)
    definitions = candidate / "definitions.yaml"
    text = definitions.read_text()
    old = "  metformin_egfr_stop:\n    value: 30\n"
    assert old in text
    definitions.write_text(text.replace(old, "  metformin_egfr_stop:\n    value: 35\n"))
    out = root / "out"
    done = subprocess.run([sys.executable, "-m", "cds", "rules", "impact", "--baseline", str(REPO / "rulesets"),
                           "--candidate", str(candidate), str(data), "--out", str(out), "--now", NOW,
                           "--workers", "2"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "metformin-renal" in done.stdout and "info->warning: 3" in done.stdout
    return out


def test_only_patients_with_egfr_30_to_35_change_metformin_renal(impact_run: Path) -> None:
    report = json.loads((impact_run / "impact.json").read_text())
    assert report["baseline"]["patients"] == 46 and report["candidate"]["patients"] == 46
    assert report["baseline"]["ruleset_digest"] != report["candidate"]["ruleset_digest"]
    rules = {rule["rule_id"]: rule for rule in report["rules"]}
    renal = rules["metformin-renal"]
    assert renal["indicator_changes"] == {"info->warning": 3}
    assert sorted(p["patient_id"] for p in renal["patients_indicator_changed"]) == ["egfr-30", "egfr-32", "egfr-34-9"]
    assert renal["added"] == 0 and renal["removed"] == 0
    assert renal["cards"]["baseline"] == renal["cards"]["candidate"]
    for rule_id, rule in rules.items():
        if rule_id == "metformin-renal":
            continue
        # No other rule adds, removes or re-grades a card; wording may quote the threshold.
        assert (rule["added"], rule["removed"], rule["indicator_changes"]) == (0, 0, {}), rule_id
    # every patient whose worklist row changed has an eGFR in [30, 35) or quotes the threshold in its summary
    base = {(r["patient_id"], r["rule_id"]): r for r in _rows(impact_run / "baseline")}
    cand = {(r["patient_id"], r["rule_id"]): r for r in _rows(impact_run / "candidate")}
    for key in base.keys() & cand.keys():
        if base[key]["indicator"] != cand[key]["indicator"]:
            assert 30 <= json.loads(cand[key]["key_values"])["egfr"] < 35, key
    markdown = (impact_run / "impact.md").read_text()
    assert "## metformin-renal" in markdown and "Indicator info -> warning for 3 patient(s)" in markdown
    assert "`egfr-30`" in markdown


def _rows(folder: Path) -> list[dict[str, str]]:
    import csv

    with (folder / "worklist.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_compare_counts_added_removed_and_indicator_changes() -> None:
    base = [{"patient_id": "a", "rule_id": "r1", "rule_version": "1", "indicator": "info", "summary": "x"},
            {"patient_id": "b", "rule_id": "r1", "rule_version": "1", "indicator": "info", "summary": "x"},
            {"patient_id": "c", "rule_id": "r2", "rule_version": "1", "indicator": "warning", "summary": "y"}]
    cand = [{"patient_id": "a", "rule_id": "r1", "rule_version": "1", "indicator": "warning", "summary": "x"},
            {"patient_id": "d", "rule_id": "r1", "rule_version": "1", "indicator": "info", "summary": "x"},
            {"patient_id": "c", "rule_id": "r2", "rule_version": "1", "indicator": "warning", "summary": "y"}]
    impact = compare(base, cand, baseline_versions={"r1": "1", "r2": "1", "r3": "1"},
                     candidate_versions={"r1": "1", "r2": "1", "r3": "2"})
    by_id = {rule.rule_id: rule for rule in impact.rules}
    assert by_id["r1"].added == ["d"] and by_id["r1"].removed == ["b"]
    assert by_id["r1"].indicator_changed == [("a", "info", "warning")]
    assert not by_id["r2"].changed
    assert by_id["r3"].changed and by_id["r3"].baseline_cards == 0  # a new version with no card is still listed
    assert [rule.rule_id for rule in impact.changed_rules] == ["r1", "r3"]
    with pytest.raises(ValueError, match="two cards"):
        compare(base + base[:1], cand)


def test_a_candidate_that_does_not_load_fails_before_any_screen(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(REPO / "rulesets", broken)
    with (broken / "definitions.yaml").open("a") as handle:
        handle.write("  bad: [\n")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "cds", "rules", "impact", "--baseline", str(REPO / "rulesets"),
                           "--candidate", str(broken), str(SYNTHEA), "--out", str(out), "--now", NOW],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 3
    assert f"{broken}/definitions.yaml" in done.stderr and "YAML syntax" in done.stderr
    assert not out.exists()  # nothing was screened
