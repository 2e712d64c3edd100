"""The why page's trace reproduces every card of every request sample from the stored request alone.

The page rebuilds the facts from the completed request (no engine, no durable_rules in the service
process) and picks the card the way the engine does; if that ever differed from what the engine
answered, the page would explain another card than the clinician saw.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.engine import Engine
from cds.facts.build import build_facts
from cds.fhir.ingest import ingest
from cds.fhir.dates import parse_now
from cds.service.why.trace import card_traces

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "fhir_samples" / "requests").glob("*.json"))
NOW = "2026-11-01T09:00:00Z"


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_trace_reproduces_each_card(engine: Engine, path: Path) -> None:
    body = json.loads(path.read_text())
    evaluation = engine.evaluate(body, now=NOW)
    ruleset = engine.ruleset
    facts = build_facts(ingest(body), valuesets=ruleset.valuesets, labs=ruleset.labs, catalog=ruleset.catalog,
                        now=parse_now(NOW))
    for rule_id, index in evaluation.chosen.items():
        traces, _thresholds, chosen = card_traces(ruleset.rule(rule_id), facts, ruleset)
        assert chosen == index, rule_id
        assert traces[index].holds and all(line.text for line in traces[index].lines)
