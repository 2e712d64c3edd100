"""Engine robustness (issue #2; durable-rules-notes.md): thousands of evaluations in one process without
growth or failure, no durable_rules state left behind, concurrent evaluations giving exactly the serial
results, and an exception inside a rule action surfacing as EngineError.

durable_rules 2.0.28 allows 1,024 live sids per ruleset and leaks megabytes per sid that is not deleted,
so 2,000 evaluations with a leaked sid each would both fail and show in the resident memory.
"""

from __future__ import annotations

import gc
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cds._exceptions import EngineError
from cds.engine import ENGINE_LOCK, CompiledRules, Engine, Evaluation
from cds.rules.compile import PATIENT_KIND

from .conftest import (
    BMI,
    INSULIN_GLARGINE_SCD,
    INSULIN_RANDOM,
    METFORMIN_SCD,
    NOW,
    WEIGHT,
    bundle,
    daily,
    medreq,
    obs,
    patient,
    request,
    sir_fires,
)

EVALUATIONS = 2_000
WARM_UP = 200
RSS_MARGIN_MB = 25.0  # measured growth over 2,000 evaluations is < 1 MB; one leaked sid costs MBs


def _mix() -> list[tuple[str, dict[str, Any], str | None, bool]]:
    """(name, payload, hook, sir-suspected expected): patients that fire and patients that do not."""

    def deceased() -> dict[str, Any]:
        payload = sir_fires()
        payload["entry"][0]["resource"]["deceasedBoolean"] = True
        return payload

    def with_pid(payload: dict[str, Any], pid: str) -> dict[str, Any]:
        """Give every resource of a bundle its own patient id so patients differ in identity, too."""
        for entry in payload["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Patient":
                resource["id"] = pid
            elif "subject" in resource:
                resource["subject"] = {"reference": f"Patient/{pid}"}
        return payload

    tdd = bundle(obs(BMI, 23, "kg/m2", 10), obs(WEIGHT, 60, "kg", 10),
                 medreq(INSULIN_GLARGINE_SCD, dosages=[daily(150)]), pt=patient(30, "male"))
    return [
        ("insulin-30", with_pid(sir_fires(insulin_uiu=30), "a"), None, True),
        ("insulin-45", with_pid(sir_fires(insulin_uiu=45, bmi=24.0), "b"), None, True),
        ("tdd-2.5-u-per-kg", with_pid(tdd, "c"), None, False),
        ("obese", with_pid(sir_fires(bmi=34), "d"), None, False),
        ("no-data", with_pid(bundle(obs(BMI, 22, "kg/m2", 10)), "e"), None, False),
        ("deceased", with_pid(deceased(), "f"), None, False),
        ("random-insulin", with_pid(bundle(obs(INSULIN_RANDOM, 60, "uIU/mL", 10), obs(BMI, 22, "kg/m2", 10)), "g"),
         None, False),
        ("order-sign", request("order-sign", obs(BMI, 22, "kg/m2", 10),
                               drafts=[medreq(METFORMIN_SCD, status="draft")]), None, False),
        ("child-high-z", with_pid(sir_fires(age=6, bmi=29), "h"), None, False),
        ("insulin-52-bundle-order-select", with_pid(sir_fires(insulin_uiu=52), "i"), "order-select", False),
    ]


MIX = _mix()
FIRING = [i for i, item in enumerate(MIX) if item[3]]
QUIET = [i for i, item in enumerate(MIX) if not item[3]]


def _schedule(quiet_between: int) -> list[int]:
    """Indexes into MIX: each firing patient followed by ``quiet_between`` non-firing ones.

    Rendering a card (Jinja) costs far more than matching, so the share of firing patients sets the run
    time; every firing patient is still evaluated hundreds of times over the 2,000 evaluations.
    """
    order: list[int] = []
    for n, fire in enumerate(FIRING):
        order.append(fire)
        order += [QUIET[(n * quiet_between + k) % len(QUIET)] for k in range(quiet_between)]
    return order


def signature(result: Evaluation) -> tuple[Any, ...]:
    """Everything a clinician would see, minus random uuids: rule ids, indicators, summaries, details."""
    cards = tuple(
        (card.source.topic.code if card.source.topic else None, card.indicator, card.summary, card.detail)
        for card in result.cards
    )
    matched = tuple(sorted((rule, tuple(sorted(idx))) for rule, idx in result.matched.items()))
    return cards, matched


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _live_facts(compiled: CompiledRules, sid: str) -> list[Any]:
    """Facts durable_rules still holds for ``sid`` ([] when the sid is gone: get_facts then raises)."""
    with ENGINE_LOCK:
        try:
            facts = compiled.host.get_facts(compiled.name, sid)
        except Exception:  # durable_rules_engine.error "Could not get facts, error code: 309": no such sid
            return []
    return facts or []


class _SidSpy:
    """Records the sid of every fact the engine asserts, then calls durable_rules as usual."""

    def __init__(self, compiled: CompiledRules) -> None:
        self.sids: set[str] = set()
        self.host = compiled.host
        self._assert_fact = self.host.assert_fact
        self._assert_facts = self.host.assert_facts

    def __enter__(self) -> _SidSpy:
        def assert_fact(name: str, fact: dict[str, Any], *args: Any, **kw: Any) -> Any:
            self.sids.add(str(fact.get("sid")))
            return self._assert_fact(name, fact, *args, **kw)

        def assert_facts(name: str, facts: list[dict[str, Any]], *args: Any, **kw: Any) -> Any:
            self.sids.update(str(f.get("sid")) for f in facts)
            return self._assert_facts(name, facts, *args, **kw)

        self.host.assert_fact = assert_fact
        self.host.assert_facts = assert_facts
        return self

    def __exit__(self, *exc: object) -> None:
        del self.host.assert_fact
        del self.host.assert_facts


@pytest.fixture(scope="module")
def baseline(engine: Engine) -> dict[str, tuple[Any, ...]]:
    """The serial result of each patient of the mix, checked against its expected sir-suspected outcome."""
    expected: dict[str, tuple[Any, ...]] = {}
    for name, payload, hook, fires in MIX:
        result = engine.evaluate(payload, hook=hook, now=NOW)
        assert ("sir-suspected" in result.matched) is fires, name
        expected[name] = signature(result)
        assert engine.evaluate(payload, hook=hook, now=NOW) and signature(
            engine.evaluate(payload, hook=hook, now=NOW)) == expected[name], f"{name} is not deterministic"
    summaries = {sig[0][0][2] for sig in expected.values() if sig[0]}
    assert len(summaries) >= 2, "the firing patients must produce distinct summaries to detect leaks"
    return expected


def test_live_sid_control_shows_what_a_leak_looks_like(engine: Engine) -> None:
    """The probe used below is meaningful: a sid left alive does hold the patient fact."""
    compiled = engine.compiled
    values = engine.evaluate(sir_fires(), now=NOW).facts.values
    # as the engine does: only the facts this pass tests (durable_rules caps properties per fact)
    values = {k: v for k, v in values.items() if k in compiled._inputs[compiled.name]}
    sid = "core-test-control"
    with ENGINE_LOCK:
        # project onto the facts the ruleset reads, as the engine does (durable_rules caps a fact's properties)
        inputs = compiled._inputs[compiled.name]
        projected = {k: v for k, v in values.items() if k in inputs}
        compiled.host.assert_fact(compiled.name, {**projected, "kind": PATIENT_KIND, "id": "patient", "sid": sid})
        try:
            assert _live_facts(compiled, sid) != []
        finally:
            compiled.host.delete_state(compiled.name, sid)
    assert _live_facts(compiled, sid) == []


def test_two_thousand_evaluations_without_growth_or_failure(engine: Engine, baseline) -> None:
    order = _schedule(quiet_between=19)
    for i in range(WARM_UP):
        name, payload, hook, _ = MIX[order[i % len(order)]]
        engine.evaluate(payload, hook=hook, now=NOW)
    gc.collect()
    before = _rss_mb()
    mismatches: list[tuple[int, str]] = []
    with _SidSpy(engine.compiled) as spy:
        for i in range(EVALUATIONS):
            name, payload, hook, _ = MIX[order[i % len(order)]]
            if signature(engine.evaluate(payload, hook=hook, now=NOW)) != baseline[name]:
                mismatches.append((i, name))
    gc.collect()
    growth = _rss_mb() - before
    assert mismatches == []
    assert {MIX[i][0] for i in order} == {item[0] for item in MIX}
    assert growth < RSS_MARGIN_MB, f"resident memory grew {growth:.1f} MB over {EVALUATIONS} evaluations"
    assert spy.sids, "the engine no longer asserts through host.assert_fact(s): update _SidSpy"
    leftover = [sid for sid in spy.sids if _live_facts(engine.compiled, sid)]
    assert leftover == [], f"{len(leftover)} durable_rules sids still hold facts"


def test_concurrent_evaluations_match_serial_results(engine: Engine, baseline) -> None:
    threads, per_thread = 8, 100
    order = _schedule(quiet_between=9)
    start = threading.Barrier(threads)

    def worker(offset: int) -> list[tuple[str, bool]]:
        start.wait()
        outcomes = []
        for i in range(per_thread):
            name, payload, hook, _ = MIX[order[(offset + i) % len(order)]]
            outcomes.append((name, signature(engine.evaluate(payload, hook=hook, now=NOW)) == baseline[name]))
        return outcomes

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(worker, t) for t in range(threads)]]
    flat = [outcome for outcomes in results for outcome in outcomes]
    assert len(flat) == threads * per_thread
    assert [name for name, same in flat if not same] == []


class _FailingRules(CompiledRules):
    """The real compiled rules, but every rule action raises: exercises our error path, not a mock engine."""

    def _action_for(self, rule_id: str, index: int) -> Any:
        def action(c: Any) -> None:
            raise RuntimeError(f"deliberate failure in {rule_id}")

        action.__name__ = f"fail_{rule_id.replace('-', '_')}_{index}"
        return action


def test_exception_inside_an_action_surfaces_as_engine_error(engine: Engine) -> None:
    failing = Engine(engine.ruleset)
    failing.compiled = _FailingRules(engine.ruleset)
    with _SidSpy(failing.compiled) as spy:
        with pytest.raises(EngineError, match="deliberate failure in sir-suspected"):
            failing.evaluate(sir_fires(), now=NOW)
        # a patient no rule matches runs no action: no error
        assert failing.evaluate(bundle(obs(BMI, 40, "kg/m2", 10)), now=NOW).cards == []
    assert spy.sids and all(_live_facts(failing.compiled, sid) == [] for sid in spy.sids)
    # the shared engine is unaffected
    assert "sir-suspected" in engine.evaluate(sir_fires(), now=NOW).matched


def test_facts_never_leak_between_consecutive_patients(engine: Engine) -> None:
    """A firing patient followed by an empty one: the second gets nothing of the first."""
    fired = engine.evaluate(sir_fires(), now=NOW)
    empty = engine.evaluate(bundle(pt=patient(40, pid="other")), now=NOW)
    assert "sir-suspected" in fired.matched
    assert empty.matched == {} and empty.cards == []
    assert empty.facts.values["fasting_insulin_known"] is False
