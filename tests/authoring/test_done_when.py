"""Issue #5 "done when": an informatician changes the metformin eGFR threshold end to end.

Follows rulesets/README.md ("Walkthrough: change the metformin eGFR threshold") step by step on a
copy of the shipped rulesets, with the CLI for validate/test/catalog and an EngineHolder standing in
for the running service (the HTTP part is covered with the service).
"""

from __future__ import annotations

import re


from click.testing import CliRunner

from cds.service.holder import EngineHolder
from cds.authoring.testfile import load_test_file
from cds.cli import cli

NOW = "2026-11-01T09:00:00Z"
CASE = "drafted metformin with eGFR 32 is a warning"


def _indicator(engine, request: dict) -> str | None:
    cards = engine.evaluate(request, now=NOW).response["cards"]
    return next((c["indicator"] for c in cards if c["source"]["topic"]["code"] == "metformin-renal"), None)


def test_change_the_metformin_egfr_threshold_end_to_end(make_ruleset) -> None:
    # The copied rulesets hold metformin-renal (the rule changed) and sir-suspected (an untouched
    # neighbour), so rules other engineers are still writing cannot make this scenario fail.
    rulesets = make_ruleset("metformin-renal", "sir-suspected")
    rules = rulesets / "rules"
    cli_runner = CliRunner()
    service = EngineHolder.load(rulesets)  # the running service
    probe = next(c for c in load_test_file(rules / "metformin-renal.test.yaml").cases if c.name == CASE).request
    assert _indicator(service.current(), probe) == "warning"

    # Step 1: raise the "stop" threshold from 30 to 35 mL/min/1.73 m2 and bump the rule version.
    definitions = rulesets / "definitions.yaml"
    text = definitions.read_text()
    assert "metformin_egfr_stop:\n    value: 30\n" in text
    definitions.write_text(text.replace("metformin_egfr_stop:\n    value: 30\n", "metformin_egfr_stop:\n    value: 35\n"))
    rule = rules / "metformin-renal.yaml"
    old_version = re.search(r"^version: (\S+)$", rule.read_text(), re.M).group(1)  # type: ignore[union-attr]
    rule.write_text(rule.read_text().replace(f"version: {old_version}", "version: 1.2.0", 1).replace(
        "changelog:\n", 'changelog:\n  - {version: "1.2.0", date: "2026-12-02", change: "stop below eGFR 35"}\n', 1))

    # Step 2: validate passes (the change is well formed)...
    validate = cli_runner.invoke(cli, ["rules", "validate", str(rulesets)])
    assert validate.exit_code == 0, validate.output

    # Step 3: ...but a test fails: eGFR 32 is now below the stop threshold, so the card is critical.
    failing = cli_runner.invoke(cli, ["rules", "test", str(rulesets)])
    assert failing.exit_code == 1
    assert f"FAIL  metformin-renal :: {CASE}" in failing.output
    assert "FAIL  metformin-renal :: drafted metformin with eGFR exactly 30" in failing.output  # the old boundary
    assert "-indicator: warning" in failing.output and "+indicator: critical" in failing.output

    # The running service refuses the change while a test fails, and keeps serving the old rules.
    refused = service.reload()
    assert not refused.ok and any(CASE in f for f in refused.test_failures)
    assert _indicator(service.current(), probe) == "warning"

    # Step 4: fix the test to the new clinical intent; validate and test pass.
    tests = rules / "metformin-renal.test.yaml"
    tests.write_text(tests.read_text().replace(
        f"  - name: {CASE}\n    hook: order-sign\n    data:\n      - LOINC#98979-8 32 mL/min/{{1.73_m2}} 1 month ago\n"
        "      - RXNORM#861007 draft\n    expect: fires\n    indicator: warning\n",
        "  - name: drafted metformin with eGFR 32 is critical (stop threshold 35)\n    hook: order-sign\n    data:\n"
        "      - LOINC#98979-8 32 mL/min/{1.73_m2} 1 month ago\n      - RXNORM#861007 draft\n    expect: fires\n"
        "    indicator: critical\n"))
    tests.write_text(tests.read_text().replace(
        "  - name: drafted metformin with eGFR exactly 30 is a warning (30 <= eGFR < 45)\n    hook: order-select\n"
        "    data:\n      - LOINC#98979-8 30 mL/min/{1.73_m2} 1 month ago\n",
        "  - name: drafted metformin with eGFR exactly 35 is a warning (35 <= eGFR < 45)\n    hook: order-select\n"
        "    data:\n      - LOINC#98979-8 35 mL/min/{1.73_m2} 1 month ago\n"))
    assert "stop threshold 35" in tests.read_text() and "exactly 35" in tests.read_text()
    assert cli_runner.invoke(cli, ["rules", "validate", str(rulesets)]).exit_code == 0
    passing = cli_runner.invoke(cli, ["rules", "test", str(rulesets)])
    assert passing.exit_code == 0, passing.output
    assert ", 0 failed, 0 errors" in passing.output

    # Step 5: the catalogue shows the new threshold and version.
    catalog = cli_runner.invoke(cli, ["rules", "catalog", str(rulesets)]).output
    assert "egfr_stop (35 mL/min/1.73 m2)" in catalog and "egfr_stop (30 mL/min/1.73 m2)" not in catalog
    assert "| [metformin-renal](#rule-metformin-renal) | Metformin and reduced kidney function | 1.2.0 | active |" in catalog

    # Step 6: the running service picks the change up without a restart.
    reloaded = service.reload()
    assert reloaded.ok and reloaded.changed, reloaded.reason
    cards = service.current().evaluate(probe, now=NOW).response["cards"]
    card = next(c for c in cards if c["source"]["topic"]["code"] == "metformin-renal")
    assert card["indicator"] == "critical" and card["source"]["topic"]["version"] == "1.2.0"
