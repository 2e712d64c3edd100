"""Lifecycle: version and status on every rule; drafts never fire unless enabled; the card carries the version."""

from __future__ import annotations

from pathlib import Path

from cds.authoring.runner import run_tests
from cds.authoring.testfile import load_test_file
from cds.engine import Engine
from cds.rules.loader import load_ruleset

NOW = "2026-11-01T09:00:00Z"


def _set(directory: Path, **changes: str) -> None:
    path = directory / "rules" / "toy-egfr.yaml"
    text = path.read_text()
    for key, value in changes.items():
        text = text.replace(f"{key}: " + {"status": "active", "version": "1.0.0"}[key], f"{key}: {value}")
    path.write_text(text)


def _firing_request(directory: Path) -> dict:
    return load_test_file(directory / "rules" / "toy-egfr.test.yaml").cases[0].request


def test_card_carries_the_rule_version(toy_ruleset: Path) -> None:
    _set(toy_ruleset, version="2.3.1")
    result = Engine.load(toy_ruleset).evaluate(_firing_request(toy_ruleset), now=NOW)
    card = next(c for c in result.cards if c.source.topic.code == "toy-egfr")
    assert card.source.topic.version == "2.3.1"
    assert result.rule_versions["toy-egfr"] == "2.3.1"


def test_drafts_never_fire_unless_enabled(toy_ruleset: Path) -> None:
    _set(toy_ruleset, status="draft")
    request = _firing_request(toy_ruleset)
    assert "toy-egfr" not in Engine.load(toy_ruleset).evaluate(request, now=NOW).chosen
    assert "toy-egfr" in Engine.load(toy_ruleset, include_drafts=True).evaluate(request, now=NOW).chosen
    # a draft is proven by its tests before it goes live: the runner enables drafts
    assert run_tests(load_ruleset(toy_ruleset), rule="toy-egfr").count("pass") == 2


def test_retired_rules_never_run(toy_ruleset: Path) -> None:
    _set(toy_ruleset, status="retired")
    request = _firing_request(toy_ruleset)
    assert "toy-egfr" not in Engine.load(toy_ruleset, include_drafts=True).evaluate(request, now=NOW).chosen
    report = run_tests(load_ruleset(toy_ruleset), rule="toy-egfr")
    assert report.results == [] and report.ok


def test_a_case_can_check_the_service_view_of_a_draft(toy_ruleset: Path) -> None:
    _set(toy_ruleset, status="draft")
    tests = toy_ruleset / "rules" / "toy-egfr.test.yaml"
    tests.write_text(tests.read_text() + """\
  - name: as the service runs it, the draft is silent
    include_drafts: false
    data:
      - LOINC#98979-8 35 mL/min/{1.73_m2} 1 month ago
    expect: silent
""")
    report = run_tests(load_ruleset(toy_ruleset), rule="toy-egfr")
    assert report.ok and report.count("pass") == 3
