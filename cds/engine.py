"""The rule engine: facts in, fired rules out, with durable_rules driven safely.

durable_rules 2.0.28 is fast but fragile (durable-rules-notes.md, measured on these machines). This
module is the only place that touches it, and it is built around those measurements:

* **One engine call at a time.** The C binding never releases the GIL and keeps process-global state;
  a module-wide lock serialises every call into it, from any thread or any loaded ruleset.
* **No background timer threads.** Each ``Host`` starts two daemon timers that call into the engine
  every 0.2 s; they segfaulted in 4 of 8 concurrent runs. We use no timers, so our Host never starts them.
* **One sid per evaluation, deleted in ``finally``.** At most one sid is live per ruleset (the limit
  is 1,024), so memory stays flat over thousands of evaluations.
* **Nothing is silently swallowed.** An exception raised inside an action lands in
  ``state["exception"]`` in durable_rules; we raise it as :class:`EngineError`.
* **Rulesets cannot be re-registered**, so each compiled ruleset gets its own ``Host`` and a unique
  name (content digest + counter): a reload builds a new one while in-flight requests finish on the old.
* **Imported only where it runs.** ``durable`` is imported lazily (by :class:`CompiledRules`), so
  importing this module costs nothing and the HTTP service process, which evaluates in worker
  processes (:mod:`cds.workers`), never loads the C extension at all.

:meth:`Engine.evaluate` returns the full :class:`Evaluation` (facts, matches, cards) for the CLI and
the authoring tools; :meth:`Evaluation.summary` is the small, picklable part a worker process sends
back to the service (:class:`EvaluationSummary`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cds._exceptions import CDSError, EngineError, RulesetError
from cds.cards.models import Card, CdsResponse
from cds.cards.order import card_sort_key
from cds.cards.render import render_card
from cds.facts.build import build_facts
from cds.facts.matching import ConceptMatcher
from cds.facts.models import PatientFacts
from cds.fhir.dates import parse_now
from cds.fhir.ingest import PatientRecord, elements_read, ingest
from cds.fhir.validation import resource_label, validate_resource
from cds.rules.compile import PATIENT_KIND, compile_definition_layers, compile_rules, referenced_facts
from cds.rules.conditions import definition_fact
from cds.rules.loader import LoadedRule, RuleSet, load_ruleset
from cds.rules.schema import INDICATOR_RANK

__all__ = ["ENGINE_LOCK", "CompiledRules", "Engine", "Evaluation", "EvaluationSummary", "Match", "active_rules"]

log = logging.getLogger(__name__)

ENGINE_LOCK = threading.RLock()
_NAMES = itertools.count(1)


_QUIET_HOST: Any = None


def _quiet_host() -> Any:
    """A durable_rules Host that never starts its background dispatch/timer threads (class built lazily)."""
    global _QUIET_HOST
    if _QUIET_HOST is None:
        from durable import engine as durable_engine

        class _QuietHost(durable_engine.Host):
            def _run(self) -> None:  # overriding the thread starter on purpose
                return None

        _QUIET_HOST = _QuietHost
    return _QUIET_HOST()


def active_rules(ruleset: RuleSet, include_drafts: bool = False) -> list[LoadedRule]:
    """The rules that run: active ones, plus drafts only when asked for (never by default)."""
    return [r for r in ruleset.rules
            if r.spec.status == "active" or (include_drafts and r.spec.status == "draft")]


@dataclass
class Evaluation:
    """The outcome of evaluating one patient: facts, which rule cards matched, the rendered response."""

    facts: PatientFacts
    matched: dict[str, list[int]]  # rule id -> every card index whose conditions held
    chosen: dict[str, int]  # rule id -> the card index shown (highest indicator)
    response: CdsResponse
    ruleset_digest: str
    rule_versions: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    offered: set[tuple[str, int, int]] = field(default_factory=set)  # conditional suggestions matched

    @property
    def cards(self) -> list[Card]:
        return self.response.cards

    def summary(self) -> EvaluationSummary:
        """What the HTTP service needs (cards JSON, versions, notes): small and picklable."""
        return EvaluationSummary(response=self.response.to_json(), ruleset_digest=self.ruleset_digest,
                                 rule_versions=dict(self.rule_versions),
                                 notes=list(getattr(self.facts, "notes", []) or []),
                                 timings_ms=dict(self.timings_ms))


@dataclass
class EvaluationSummary:
    """The part of an :class:`Evaluation` that crosses a process boundary: the response JSON and audit data.

    A worker process returns this instead of the Evaluation because facts and pydantic cards are
    large to pickle, and the service only needs the JSON it answers with and what it audits.
    """

    response: dict[str, Any]
    ruleset_digest: str
    rule_versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


class CompiledRules:
    """One RuleSet registered in its own durable_rules Host: definition layers, then the rules."""

    def __init__(self, ruleset: RuleSet, *, include_drafts: bool = False) -> None:
        self.ruleset = ruleset
        self.rules: list[LoadedRule] = active_rules(ruleset, include_drafts)
        self.name = f"sir_{ruleset.digest}_{next(_NAMES)}"
        # (sid, what fired): ("def", name) | ("card", rule_id, index) | ("suggestion", rule_id, index, n)
        self._fired: list[tuple[str, tuple[Any, ...]]] = []
        try:
            layers = compile_definition_layers(ruleset.definition_nodes, self._definition_action, self._noop)
            self.layers: list[tuple[str, list[str]]] = [
                (f"{self.name}_d{i}", names) for i, (names, _definition) in enumerate(layers)
            ]
            rulesets = {f"{self.name}_d{i}": definition for i, (_names, definition) in enumerate(layers)}
            rulesets[self.name] = compile_rules(self.rules, self._action_for, self._noop, self._suggestion_action)
            # each pass receives only the facts its rules test (durable_rules caps properties per fact)
            self._inputs = {name: frozenset(referenced_facts(definition)) for name, definition in rulesets.items()}
        except ValueError as exc:
            raise RulesetError(f"rules cannot be compiled for durable_rules: {exc}") from exc
        with ENGINE_LOCK:
            self.host = _quiet_host()
            self.host.set_rulesets(rulesets)

    def _definition_action(self, name: str) -> Any:
        def action(c: Any) -> None:
            self._fired.append((c.m["sid"], ("def", name)))

        action.__name__ = f"infer_{name}"
        return action

    def _action_for(self, rule_id: str, index: int) -> Any:
        def action(c: Any) -> None:
            self._fired.append((c.m["sid"], ("card", rule_id, index)))

        action.__name__ = f"fire_{rule_id.replace('-', '_')}_{index}"
        return action

    def _suggestion_action(self, rule_id: str, index: int, number: int) -> Any:
        def action(c: Any) -> None:
            self._fired.append((c.m["sid"], ("suggestion", rule_id, index, number)))

        action.__name__ = f"offer_{rule_id.replace('-', '_')}_{index}_{number}"
        return action

    @staticmethod
    def _noop(c: Any) -> None:
        return None

    def _assert(self, ruleset_name: str, fact: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Assert one fact in a fresh sid of ``ruleset_name``; what fired; the sid is always deleted."""
        sid = uuid.uuid4().hex
        inputs = self._inputs[ruleset_name]
        projected = {key: value for key, value in fact.items() if key in inputs}
        projected.update(kind=PATIENT_KIND, id="patient", sid=sid)
        self._fired.clear()
        try:
            state = self.host.assert_fact(ruleset_name, projected)
            if isinstance(state, dict) and state.get("exception"):
                raise EngineError(f"a rule action failed: {state['exception']}")
            return [key for s, key in self._fired if s == sid]
        except EngineError:
            raise
        except Exception as exc:  # durable raises bare Exception subclasses
            raise EngineError(f"durable_rules failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._fired.clear()
            try:
                self.host.delete_state(ruleset_name, sid)
            except Exception as exc:  # pragma: no cover - would mean a leaked sid
                log.error("could not delete durable_rules state %s/%s: %s", ruleset_name, sid, exc)

    def infer(self, values: dict[str, Any]) -> dict[str, bool]:
        """Run the definition layers: ``def_<name>`` -> truth, for every definition."""
        fact = {**values, "kind": PATIENT_KIND, "id": "patient"}
        inferred: dict[str, bool] = {}
        with ENGINE_LOCK:
            for ruleset_name, names in self.layers:
                held = {key[1] for key in self._assert(ruleset_name, fact)}
                for name in names:
                    inferred[definition_fact(name)] = name in held
                fact.update(inferred)
        return inferred

    def match(self, values: dict[str, Any]) -> Match:
        """Infer the definitions, then match the rules and the conditional suggestions."""
        with ENGINE_LOCK:
            inferred = self.infer(values)
            fired = self._assert(self.name, {**values, **inferred, "kind": PATIENT_KIND, "id": "patient"})
        result = Match(definitions=inferred)
        for key in fired:
            if key[0] == "card":
                indexes = result.cards.setdefault(key[1], [])
                if key[2] not in indexes:
                    indexes.append(key[2])
            elif key[0] == "suggestion":
                result.suggestions.add((key[1], key[2], key[3]))
        return result


@dataclass
class Match:
    """What durable_rules matched for one patient."""

    cards: dict[str, list[int]] = field(default_factory=dict)  # rule id -> card indexes
    suggestions: set[tuple[str, int, int]] = field(default_factory=set)  # (rule, card, suggestion) offered
    definitions: dict[str, bool] = field(default_factory=dict)  # def_<name> -> truth


def blame_invalid_resource(record: PatientRecord) -> None:
    """Raise InvalidResourceError for the first resource of ``record`` that is not valid FHIR R4."""
    candidates = [record.patient] if record.patient is not None else []
    candidates += [r for resources in record.resources.values() for r in resources]
    candidates += list(record.draft_orders) + list(record.medications_by_ref.values())
    for resource in candidates:
        validate_resource(elements_read(resource))  # judged on what the facts read, as they were


class Engine:
    """Evaluate CDS Hooks requests or Bundles against one compiled RuleSet."""

    def __init__(self, ruleset: RuleSet, *, include_drafts: bool = False) -> None:
        self.ruleset = ruleset
        self.include_drafts = include_drafts
        self.compiled = CompiledRules(ruleset, include_drafts=include_drafts)
        self._rules = {r.spec.id: r for r in self.compiled.rules}
        self._matcher = ConceptMatcher(ruleset.valuesets)
        self._order = {r.spec.id: i for i, r in enumerate(self.compiled.rules)}

    @classmethod
    def load(cls, directory: Path | None = None, *, include_drafts: bool = False) -> Engine:
        return cls(load_ruleset(directory), include_drafts=include_drafts)

    @property
    def digest(self) -> str:
        return self.ruleset.digest

    @property
    def rules(self) -> list[LoadedRule]:
        return self.compiled.rules

    def evaluate(self, payload: Any, *, hook: str | None = None, now: datetime | str | None = None) -> Evaluation:
        """Evaluate a parsed CDS Hooks request, Bundle or resource (see :func:`cds.fhir.ingest.ingest`)."""
        started = time.perf_counter()
        record = ingest(payload, hook=hook)
        return self.evaluate_record(record, now=now, started=started)

    def facts_for(self, record: PatientRecord, now: datetime) -> PatientFacts:
        return build_facts(record, valuesets=self.ruleset.valuesets, labs=self.ruleset.labs,
                           catalog=self.ruleset.catalog, now=now, matcher=self._matcher)

    def evaluate_record(
        self, record: PatientRecord, *, now: datetime | str | None = None, started: float | None = None
    ) -> Evaluation:
        started = started if started is not None else time.perf_counter()
        instant = parse_now(now)  # a datetime is normalised to aware UTC too
        try:
            facts = self.facts_for(record, instant)
        except CDSError:
            raise
        except Exception as exc:
            # The fact builders read raw JSON before validating what they use. A resource whose
            # structure is wrong (a list where FHIR has an object...) can trip them first: find it
            # and name it. Only if every resource is valid FHIR is this our bug.
            blame_invalid_resource(record)
            raise EngineError(f"facts could not be built: {type(exc).__name__}: {exc}") from exc
        t_facts = time.perf_counter()
        matched: dict[str, list[int]] = {}
        offered: set[tuple[str, int, int]] = set()
        if not facts.deceased:
            found = self.compiled.match(facts.values)
            matched, offered, facts.definitions = found.cards, found.suggestions, found.definitions
        else:
            facts.notes.append("patient is deceased: no cards")
        t_match = time.perf_counter()
        chosen = {
            rule_id: max(indexes, key=lambda i: (INDICATOR_RANK[self._rules[rule_id].spec.cards[i].indicator], -i))
            for rule_id, indexes in matched.items()
        }
        raw_requests = {resource_label(r): r for r in record.of_type("MedicationRequest")}
        cards: list[tuple[int, int, Card]] = []
        for rule_id, index in chosen.items():
            rule = self._rules[rule_id]
            conditional = rule.suggestion_conditions[index] if rule.suggestion_conditions else []
            withheld = {n for n, condition in enumerate(conditional)
                        if condition is not None and (rule_id, index, n) not in offered}
            card = render_card(rule.spec, index, facts, raw_requests,
                               global_thresholds=dict(self.ruleset.definitions.thresholds), withheld=withheld)
            cards.append((-INDICATOR_RANK[card.indicator], self._order[rule_id], card))
        cards.sort(key=lambda item: card_sort_key(item[2], item[1]))  # cds/cards/order.py
        response = CdsResponse(cards=[c for _, _, c in cards])
        done = time.perf_counter()
        return Evaluation(
            facts=facts, matched=matched, chosen=chosen, response=response, ruleset_digest=self.digest,
            rule_versions={rule_id: self._rules[rule_id].spec.version for rule_id in chosen}, offered=offered,
            timings_ms={"facts": (t_facts - started) * 1000, "match": (t_match - t_facts) * 1000,
                        "render": (done - t_match) * 1000, "total": (done - started) * 1000},
        )
