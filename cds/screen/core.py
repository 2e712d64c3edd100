"""The per-patient core of population screening: one patient's resources in, worklist rows out.

Why a core of its own: a patient's cards in a population worklist must be exactly the cards
``cds evaluate`` (and the ``patient-view`` hook) gives for that patient's data at the same instant,
whichever engine ran the screen (local worker processes or Spark executors). So every engine calls
:func:`screen_patient`, which builds the ``patient-view`` request the service would evaluate
(``context.patientId`` + the patient's resources as a prefetch Bundle) and sends it through the same
ingest -> facts -> engine -> cards path (:meth:`cds.engine.Engine.evaluate`). Nothing here
re-implements a rule.

Stable API (the Spark engine and ``cds rules impact`` build on it):

* :class:`PatientData` - one patient's entries ``(fullUrl or None, resource)`` + ``data_through``.
* :class:`WorklistRow` - one row per card; :data:`COLUMNS` is the output column order.
* :func:`screen_patient` ``(patient, now, engine) -> list[WorklistRow]``.
* :func:`screen_batch` - the worker-process handler (``"cds.screen.core:screen_batch"``):
  a batch of patients -> :class:`BatchResult` per patient (rows, or the error that patient raised).
* :func:`record_date` - the date a resource records (for ``data_through``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cds._exceptions import CDSError, InputError
from cds.fhir.dates import parse_now

if TYPE_CHECKING:
    from cds.engine import Engine, Evaluation
    from cds.rules.model import LoadedRule

__all__ = [
    "COLUMNS",
    "HANDLER",
    "INDICATOR_ORDER",
    "BatchResult",
    "PatientData",
    "WorklistRow",
    "card_evidence",
    "patient_request",
    "record_date",
    "row_sort_key",
    "screen_batch",
    "screen_patient",
]

#: Column order of worklist.csv / worklist.parquet. ``key_values`` is JSON: the numeric facts the
#: card's conditions read (canonical units), for the report's distributions and for reviewers.
COLUMNS = ("patient_id", "rule_id", "rule_version", "indicator", "summary", "evidence", "data_through",
           "key_values")

#: Worklist order: critical first, then warning, then info.
INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}

#: The worker-process handler name (:class:`cds.workers.pool.WorkerSpec` ``handler``).
HANDLER = "cds.screen.core:screen_batch"

# Fields that date a record, in the order they are tried (FHIR R4 names; first one present wins).
_DATE_FIELDS = ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued", "authoredOn",
                "recordedDate", "onsetDateTime", "onsetPeriod", "abatementDateTime", "dateAsserted",
                "occurrenceDateTime", "occurrencePeriod", "performedDateTime", "performedPeriod", "period",
                "billablePeriod", "created", "date", "started", "lastOccurrence")
_LAB_SUFFIXES = ("_low_inclusive", "_high_inclusive", "_low", "_high", "_unreadable", "_recorded", "_last_days",
                 "_last")
_DATE_PREFIX = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?")
_RESOURCE_ID = re.compile(r"\b(?:Observation|Condition|MedicationRequest|MedicationStatement|MedicationAdministration|"
                          r"AllergyIntolerance|ServiceRequest|DeviceRequest|SupplyRequest|Device|Procedure|Patient)"
                          r"/[A-Za-z0-9\-.]{1,64}")


@dataclass
class PatientData:
    """One patient's data as the screen holds it: picklable, JSON-able, engine-agnostic.

    ``entries`` are ``(fullUrl or None, resource)``: the patient's own resources (the Patient included
    when the input has it) plus the Medication resources they reference. ``data_through`` is the date
    (YYYY-MM-DD) of the patient's latest record of any type, or None when no record is dated.
    """

    patient_id: str
    entries: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    data_through: str | None = None


@dataclass(frozen=True)
class WorklistRow:
    """One card for one patient (see :data:`COLUMNS`)."""

    patient_id: str
    rule_id: str
    rule_version: str
    indicator: str
    summary: str
    evidence: str  # resource ids behind the card, ";" separated, sorted
    data_through: str | None
    key_values: str = "{}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BatchResult:
    """What a worker sends back for one patient of a batch: rows, or the error that stopped it."""

    patient_id: str
    rows: list[WorklistRow] = field(default_factory=list)
    error: str | None = None  # "InvalidResourceError: Observation/x is not valid FHIR R4: ..."
    error_kind: str | None = None  # "input" (the data) or "engine" (a fault of ours)


def row_sort_key(row: WorklistRow) -> tuple[int, str, str]:
    """Indicator (critical first), then rule id, then patient id: the worklist's stable order."""
    return (INDICATOR_ORDER.get(row.indicator, 9), row.rule_id, row.patient_id)


def record_date(resource: dict[str, Any]) -> str | None:
    """The date (``YYYY-MM-DD``, or a shorter partial date) a resource records, or None.

    Periods count by their end, else their start. Only the date part is kept: ``data_through`` says
    how current a patient's data are, to the day.
    """
    for name in _DATE_FIELDS:
        value = resource.get(name)
        if isinstance(value, dict):
            value = value.get("end") or value.get("start")
        if isinstance(value, str):
            match = _DATE_PREFIX.match(value)
            if match:
                return match.group(0)
    return None


def patient_request(patient: PatientData) -> dict[str, Any]:
    """The ``patient-view`` CDS Hooks request the service would evaluate for this patient.

    The patient's resources travel as one prefetch Bundle (the service reads prefetch by
    resourceType, never by key name); fullUrls are kept so ``urn:uuid:`` references resolve as they do
    in the original Bundle.
    """
    entries = []
    for full_url, resource in patient.entries:
        entry: dict[str, Any] = {"resource": resource}
        if full_url:
            entry["fullUrl"] = full_url
        entries.append(entry)
    return {
        "hook": "patient-view",
        "hookInstance": f"screen-{patient.patient_id}",
        "context": {"userId": "Practitioner/population-screen", "patientId": patient.patient_id},
        "prefetch": {"records": {"resourceType": "Bundle", "type": "collection", "entry": entries}},
    }


def _card_nodes(rule: LoadedRule, index: int) -> list[Any]:
    return [node for node in (rule.when, rule.card_conditions[index] if index < len(rule.card_conditions) else None)
            if node is not None]


def card_evidence(engine: Engine, evaluation: Evaluation, rule_id: str) -> tuple[list[str], dict[str, float]]:
    """(resource ids, numeric key values) behind the card ``rule_id`` shows for this evaluation.

    The facts are those the card's conditions read (the rule's ``when`` and the chosen card's
    condition, shared definitions expanded); each fact's provenance is the one ``cds explain`` prints
    (:func:`cds.authoring.explain.provenance`), so the worklist and the explanation name the same
    records. Facts that are absent contribute nothing.
    """
    from cds.authoring.explain import provenance

    rule = engine.ruleset.rule(rule_id)
    index = evaluation.chosen[rule_id]
    names: set[str] = set()
    for node in _card_nodes(rule, index):
        names |= node.facts()
    facts = evaluation.facts
    ids: set[str] = set()
    key_values: dict[str, float] = {}
    for name in sorted(names):
        where = provenance(name, facts, engine.ruleset)
        if where:
            ids.update(_RESOURCE_ID.findall(where))
        base = name.removesuffix("_known")
        for suffix in _LAB_SUFFIXES:
            base = base.removesuffix(suffix)
        base = "alt" if base == "alt_x_uln" else base
        for record in (facts.last_labs.get(base), facts.unreadable.get(base)):
            if record is not None:  # the stale or unreadable value the card names
                ids.add(record.resource)
        lab = facts.labs.get(base)
        if lab is not None and lab.comparator is None:
            key_values[base] = round(lab.value, 4)
        elif base in ("insulin_tdd", "insulin_u_per_kg", "bmi_z", "age"):
            value = facts.values.get(base)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                key_values[base] = round(float(value), 4)
    return sorted(ids), key_values


def screen_patient(patient: PatientData, now: datetime | str, engine: Engine) -> list[WorklistRow]:
    """Evaluate one patient on ``patient-view`` at ``now``; one row per card, in the card order.

    Raises what :meth:`cds.engine.Engine.evaluate` raises (:class:`cds._exceptions.InputError` naming
    the resource and field for bad data): the caller decides how a population run reports it.
    """
    evaluation = engine.evaluate(patient_request(patient), hook="patient-view", now=now)
    rows = []
    for card in evaluation.cards:
        topic = card.source.topic
        if topic is None:  # every rule card carries its rule as topic (cds/cards/render.py)
            raise CDSError(f"a card without a rule topic: {card.summary!r}")
        rule_id = topic.code
        ids, key_values = card_evidence(engine, evaluation, rule_id)
        rows.append(WorklistRow(
            patient_id=patient.patient_id, rule_id=rule_id,
            rule_version=topic.version or evaluation.rule_versions.get(rule_id, ""),
            indicator=card.indicator, summary=card.summary, evidence=";".join(ids),
            data_through=patient.data_through, key_values=json.dumps(key_values, sort_keys=True),
        ))
    return rows


def screen_batch(engine: Engine, payload: Any, hook: str | None, now: str | None) -> list[BatchResult]:
    """Worker-process handler: ``payload = {"patients": [PatientData, ...]}`` -> one result each.

    A patient whose data cannot be evaluated gets its error, never a silent empty row list, and does
    not stop the others in the batch.
    """
    instant = parse_now(now)
    results = []
    for patient in payload["patients"]:
        try:
            results.append(BatchResult(patient.patient_id, screen_patient(patient, instant, engine)))
        except InputError as exc:
            results.append(BatchResult(patient.patient_id, error=f"{type(exc).__name__}: {exc}", error_kind="input"))
        except Exception as exc:  # noqa: BLE001 - reported per patient; the run goes on and says so
            results.append(BatchResult(patient.patient_id, error=f"{type(exc).__name__}: {exc}", error_kind="engine"))
    return results
