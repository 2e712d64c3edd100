"""The rule test runner: real Engine, readable expected-vs-actual diffs, CLI and pytest agree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cds.authoring.gate import validate_ruleset
from cds.authoring.runner import run_tests
from cds.cli import cli
from cds.rules.loader import load_ruleset

from .conftest import RULESETS


def test_passing_tests(toy_ruleset: Path) -> None:
    report = run_tests(load_ruleset(toy_ruleset), rule="toy-egfr")
    assert report.ok and report.count("pass") == 2


def test_failure_shows_diff_and_failing_condition(toy_ruleset: Path) -> None:
    test_file = toy_ruleset / "rules" / "toy-egfr.test.yaml"
    test_file.write_text(test_file.read_text().replace("indicator: warning", "indicator: critical")
                         .replace("LOINC#98979-8 42", "LOINC#98979-8 39"))
    report = run_tests(load_ruleset(toy_ruleset), rule="toy-egfr")
    assert not report.ok and report.count("fail") == 2
    text = report.render()
    assert "-indicator: critical\n" in text.replace("      ", "") and "+indicator: warning" in text
    assert "-fires: False" in text and "+fires: True" in text
    assert "toy-egfr.test.yaml:6)" in text and "toy-egfr.test.yaml:11)" in text


def test_silent_expected_but_missing_shows_why_it_did_not_fire(toy_ruleset: Path) -> None:
    test_file = toy_ruleset / "rules" / "toy-egfr.test.yaml"
    test_file.write_text(test_file.read_text().replace("LOINC#98979-8 35", "LOINC#98979-8 45"))
    text = run_tests(load_ruleset(toy_ruleset), rule="toy-egfr").render()
    assert "egfr = 45 mL/min/{1.73_m2}" in text
    assert "needed egfr < toy_egfr (40 mL/min/{1.73_m2})" in text


def test_todo_cases_report_known_gaps_and_fail_once_fixed(toy_ruleset: Path) -> None:
    test_file = toy_ruleset / "rules" / "toy-egfr.test.yaml"
    text = test_file.read_text()
    test_file.write_text(text + (
        "  - name: eGFR 44 should fire one day\n    data:\n      - LOINC#98979-8 44 mL/min/{1.73_m2} 1 month ago\n"
        "    expect: fires\n    todo: waiting for a lower band\n"))
    report = run_tests(load_ruleset(toy_ruleset), rule="toy-egfr")
    assert report.ok and report.count("todo") == 1
    test_file.write_text(text.replace("    indicator: warning", "    indicator: warning\n    todo: stale note"))
    report = run_tests(load_ruleset(toy_ruleset), rule="toy-egfr")
    assert not report.ok and "remove 'todo'" in report.render()


def test_orphan_test_file_is_a_problem(toy_ruleset: Path) -> None:
    (toy_ruleset / "rules" / "gone.test.yaml").write_text("rule: gone\n")
    ruleset = load_ruleset(toy_ruleset, strict=False)
    assert not any("gone.test.yaml" in str(i) for i in ruleset.issues)  # loading checks the schema only
    validate_ruleset(ruleset)
    assert any("gone.test.yaml" in str(i) and i.severity == "error" for i in ruleset.issues)
    report = run_tests(ruleset)
    assert not report.ok
    assert any("gone.test.yaml:1: test file has no rule 'gone'" in p for p in report.problems)


def test_cli_exit_codes(toy_ruleset: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["rules", "test", str(toy_ruleset)])
    assert ok.exit_code == 0, ok.output
    assert "0 failed" in ok.output
    test_file = toy_ruleset / "rules" / "toy-egfr.test.yaml"
    test_file.write_text(test_file.read_text().replace("indicator: warning", "indicator: info"))
    bad = runner.invoke(cli, ["rules", "test", str(toy_ruleset), "--rule", "toy-egfr"])
    assert bad.exit_code == 1
    assert "FAIL  toy-egfr :: eGFR 35 fires" in bad.output


def test_pytest_collects_the_same_cases(toy_ruleset: Path) -> None:
    shutil.copy(RULESETS / "conftest.py", toy_ruleset / "conftest.py")
    test_file = toy_ruleset / "rules" / "toy-egfr.test.yaml"
    test_file.write_text(test_file.read_text().replace("indicator: warning", "indicator: info"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(toy_ruleset / "rules" / "toy-egfr.test.yaml"), "-q",
         "-p", "no:cacheprovider", "--rootdir", str(toy_ruleset)],
        capture_output=True, text=True, cwd=toy_ruleset, timeout=240,
    )
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "-indicator: info" in result.stdout and "+indicator: warning" in result.stdout


# --- two processes (cds.authoring.runner.start_tests with jobs=2) ------------------------------------
# Run in a fresh interpreter: the runner forks only a single-threaded process, and earlier tests in this
# pytest process may have left threads behind (then it runs everything itself, correctly but unforked).

_SPLIT_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
import cds.authoring.runner as runner
from cds.rules.loader import load_ruleset
runner._MIN_CASES_TO_SPLIT = 1  # the toy ruleset has a handful of cases
summary = lambda report: [[r.title, r.status, r.message] for r in report.results]
one = runner.run_tests(load_ruleset(Path(sys.argv[1])), jobs=1)
pending = runner.start_tests(load_ruleset(Path(sys.argv[1])), jobs=2)
forked = pending._child is not None
if sys.argv[2] == "kill" and forked:
    os.kill(pending._child[0], signal.SIGKILL)  # the real child, a real signal
two = pending.finish()
print(json.dumps({"forked": forked, "one": summary(one), "two": summary(two), "ok": two.ok,
                  "failed": [one.count("fail"), two.count("fail")]}))
"""


def _split(toy_ruleset: Path, mode: str) -> dict:
    import json

    done = subprocess.run([sys.executable, "-c", _SPLIT_SCRIPT, str(toy_ruleset), mode], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_processes_report_exactly_what_one_process_reports(toy_ruleset: Path) -> None:
    """Every case runs once, failures included, and the report keeps the files' order."""
    test_file = toy_ruleset / "rules" / "toy-egfr.test.yaml"
    test_file.write_text(test_file.read_text().replace("indicator: warning", "indicator: critical"))
    result = _split(toy_ruleset, "compare")
    assert result["forked"], "no child was forked"
    assert len(result["one"]) >= 2 and result["two"] == result["one"]
    assert result["failed"][0] == result["failed"][1] >= 1


def test_a_child_killed_mid_run_costs_time_not_cases(toy_ruleset: Path) -> None:
    """SIGKILL to the real child: the parent runs the child's cases itself; nothing is skipped."""
    result = _split(toy_ruleset, "kill")
    assert result["forked"]
    assert result["two"] == result["one"] and result["ok"]
