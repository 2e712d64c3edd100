"""A patient's values of one lab concept over time, read exactly as the facts layer reads them.

Why not only ``PatientFacts.labs``: the facts hold the one value a rule uses (the latest in the
look-back). A clinician asked "why this card?" also needs the values around it: was the eGFR falling,
was the insulin a single value, which results were not counted and why. Each Observation is read with
the facts layer's own reader (:func:`cds.facts.labs.read_observation`: codes, canonical units,
status, comparators), so a point on the chart is the value a rule would have compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds.authoring.facts import plain_unit
from cds.facts.labs import LabCatalog, months_before, observation_date, observation_text, read_observation
from cds.facts.models import IgnoredValue, LabValue, PatientFacts, UnreadableValue
from cds.fhir.ingest import PatientRecord
from cds.fhir.validation import resource_label

__all__ = ["LabSeries", "SeriesPoint", "lab_series"]


@dataclass
class SeriesPoint:
    """One readable value; ``used`` marks the value the rules compared (the fact)."""

    value: LabValue
    used: bool = False
    in_lookback: bool = True


@dataclass
class LabSeries:
    name: str
    title: str
    unit: str
    lookback_months: int | None
    lookback_start: datetime | None
    points: list[SeriesPoint] = field(default_factory=list)
    not_counted: list[tuple[str, str, str]] = field(default_factory=list)  # (date or "", resource, reason)

    @property
    def used(self) -> SeriesPoint | None:
        return next((p for p in self.points if p.used), None)


def lab_series(record: PatientRecord, catalog: LabCatalog, facts: PatientFacts, names: list[str]) -> list[LabSeries]:
    """One series per lab name in ``names`` that has any record (readable or not), oldest value first."""
    wanted = {n for n in names if n in catalog.definitions}
    out: dict[str, LabSeries] = {}
    for name in sorted(wanted, key=names.index):
        definition = catalog.definitions[name]
        start = months_before(facts.now, definition.lookback_months) if definition.lookback_months else None
        out[name] = LabSeries(name=name, title=definition.title, unit=plain_unit(definition.unit),
                              lookback_months=definition.lookback_months, lookback_start=start)
    for observation in record.of_type("Observation"):
        hits = catalog.candidates(observation)
        if not hits:
            continue
        text: str | None = None
        for name, pattern in hits:
            if name not in out or any(p.value.resource == resource_label(observation) for p in out[name].points):
                continue  # several codings of one Observation hit the same concept: one point
            if pattern is not None:
                text = text if text is not None else observation_text(observation)
                if not pattern.search(text):
                    continue
            _add(out[name], catalog, observation, facts)
    for series in out.values():
        series.points.sort(key=lambda p: p.value.date)
        _mark_ignored(series, facts)
    return [s for s in out.values() if s.points or s.not_counted]


def _add(series: LabSeries, catalog: LabCatalog, observation: dict[str, Any], facts: PatientFacts) -> None:
    definition = catalog.definitions[series.name]
    label = resource_label(observation)
    when = observation_date(observation)
    if when is None:
        series.not_counted.append(("", label, "no usable date (effective[x] or issued)"))
        return
    if when > facts.now:
        series.not_counted.append((when.date().isoformat(), label, "dated after the evaluation time"))
        return
    try:
        result = read_observation(definition, observation, when)
    except Exception as exc:  # noqa: BLE001 - the call was answered; show the record as not readable
        series.not_counted.append((when.date().isoformat(), label, f"could not be read ({type(exc).__name__})"))
        return
    if isinstance(result, LabValue):
        used = facts.labs.get(series.name)
        in_lookback = series.lookback_start is None or when.date() >= series.lookback_start.date()
        series.points.append(SeriesPoint(value=result, used=used is not None and used.resource == label,
                                         in_lookback=in_lookback))
    elif isinstance(result, UnreadableValue):
        series.not_counted.append((when.date().isoformat(), label, f"could not be read ('{result.raw}': {result.reason})"))
    elif isinstance(result, IgnoredValue):
        series.not_counted.append((when.date().isoformat(), label, result.reason))


def _mark_ignored(series: LabSeries, facts: PatientFacts) -> None:
    """Readable values the facts layer still set aside say so (e.g. the same-date rule)."""
    for item in facts.ignored:
        if item.fact == series.name and not any(r == item.resource for _, r, _ in series.not_counted):
            if not any(p.value.resource == item.resource for p in series.points):
                series.not_counted.append(("", item.resource, item.reason))
