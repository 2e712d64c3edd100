"""Laboratory and body-measure facts: latest valid value per concept, in canonical units.

The definitions (codes, unit, look-back) are data in ``rulesets/labs.yaml`` so an informatician can
see and change them; this module applies the normalisation rules of pathways.md section 1:

* status final / amended / corrected only;
* latest value per concept inside the look-back window (values dated after "now" do not exist yet);
* units converted before any comparison; an unconvertible unit is ignored and reported, never compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cds._exceptions import RulesetError
from cds.valuesets import canonical_system
from cds.facts.models import IgnoredValue, LabValue
from cds.fhir.dates import parse_fhir_datetime
from cds.fhir.ingest import PatientRecord, wellformed_concept
from cds.fhir.validation import resource_label
from cds.rules.yamlsource import safe_load
from cds.units import UnitError, canonical_unit, convert, normalise_unit_text

__all__ = ["LabCatalog", "LabDefinition", "load_lab_catalog", "months_before", "observation_date"]

USABLE_STATUSES = frozenset({"final", "amended", "corrected"})  # pathways.md 1


class TextQualifier(BaseModel):
    """Codes of ``valueset`` count only when the Observation's text/display matches ``pattern``."""

    model_config = ConfigDict(extra="forbid")
    valueset: str
    pattern: str


class LabDefinition(BaseModel):
    """One lab fact: which codes feed it, its canonical unit and its look-back window."""

    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    quantity: str
    valuesets: list[str]
    text_qualified: TextQualifier | None = None
    lookback_months: int | None = Field(default=None, ge=1)
    aggregate: Literal["latest", "min"] = "latest"
    source: str

    @property
    def unit(self) -> str:
        return canonical_unit(self.quantity)


@dataclass
class LabCatalog:
    """The lab definitions plus a (system, code) index so each Observation is looked at once."""

    definitions: dict[str, LabDefinition]
    by_code: dict[tuple[str, str], list[tuple[str, re.Pattern[str] | None]]]

    def candidates(self, observation: dict[str, Any]) -> list[tuple[str, re.Pattern[str] | None]]:
        found: list[tuple[str, re.Pattern[str] | None]] = []
        for coding in (observation.get("code") or {}).get("coding") or []:
            if isinstance(coding, dict):
                system = coding.get("system")
                hits = self.by_code.get((system, coding.get("code")))
                if hits is None and isinstance(system, str):  # urn:oid / alias spellings of LOINC
                    hits = self.by_code.get((canonical_system(system), coding.get("code")))
                found.extend(hits or ())
        return found


def load_lab_catalog(path: Path, valuesets: dict[str, Any]) -> LabCatalog:
    """Read ``labs.yaml`` and index its codes; unknown value sets or quantities are errors."""
    try:
        data = safe_load(path.read_text(encoding="utf-8")) or {}  # libyaml, duplicate keys refused
    except (OSError, yaml.YAMLError) as exc:
        raise RulesetError(f"{path}: cannot read lab definitions: {exc}") from None
    issues: list[str] = []
    definitions: dict[str, LabDefinition] = {}
    for name, body in (data.get("labs") or {}).items():
        try:
            definition = LabDefinition.model_validate({"name": name, **(body or {})})
            definition.unit  # noqa: B018 - raises for an unknown quantity
        except (ValidationError, UnitError) as exc:
            issues.append(f"{path}: lab {name}: {exc}")
            continue
        for vs in definition.valuesets + (
            [definition.text_qualified.valueset] if definition.text_qualified else []
        ):
            if vs not in valuesets:
                issues.append(f"{path}: lab {name}: unknown value set {vs!r}")
        definitions[name] = definition
    if issues:
        raise RulesetError("lab definitions do not load", issues)
    by_code: dict[tuple[str, str], list[tuple[str, re.Pattern[str] | None]]] = {}
    for definition in definitions.values():
        entries: list[tuple[str, re.Pattern[str] | None]] = [
            (vs, None) for vs in definition.valuesets
        ]
        if definition.text_qualified:
            entries.append(
                (
                    definition.text_qualified.valueset,
                    re.compile(definition.text_qualified.pattern, re.IGNORECASE),
                )
            )
        for vs_id, pattern in entries:
            vs = valuesets[vs_id]
            for system, code in ((sy, c) for sy in vs.systems for c in vs.codes_for(sy)):
                bucket = by_code.setdefault((system, code), [])
                if (definition.name, pattern) not in bucket:
                    bucket.append((definition.name, pattern))
    return LabCatalog(definitions=definitions, by_code=by_code)


def months_before(now: datetime, months: int) -> datetime:
    """The same instant ``months`` calendar months earlier (day clamped to the month's length)."""
    year, month = divmod(now.month - 1 - months, 12)
    year += now.year
    month += 1
    import calendar

    day = min(now.day, calendar.monthrange(year, month)[1])
    return now.replace(year=year, month=month, day=day)


def observation_date(observation: dict[str, Any]) -> datetime | None:
    """When the value was true: effective[x], else issued."""
    period = observation.get("effectivePeriod") or {}
    for raw in (
        observation.get("effectiveDateTime"),
        observation.get("effectiveInstant"),
        period.get("end") if isinstance(period, dict) else None,
        period.get("start") if isinstance(period, dict) else None,
        observation.get("issued"),
    ):
        parsed = parse_fhir_datetime(raw)
        if parsed is not None:
            return parsed
    return None


def observation_text(observation: dict[str, Any]) -> str:
    code = observation.get("code") or {}
    parts = [code.get("text") or ""]
    parts += [c.get("display") or "" for c in code.get("coding") or [] if isinstance(c, dict)]
    return " ".join(p for p in parts if isinstance(p, str))


def _first_code(observation: dict[str, Any]) -> str | None:
    for coding in (observation.get("code") or {}).get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            system = str(coding.get("system") or "")
            alias = "LOINC" if system == "http://loinc.org" else system
            return f"{alias}#{coding['code']}"
    return None


def _to_lab_value(
    definition: LabDefinition,
    observation: dict[str, Any],
    when: datetime,
    ignored: list[IgnoredValue],
) -> LabValue | None:
    label = resource_label(observation)
    status = observation.get("status")
    if status not in USABLE_STATUSES:
        ignored.append(IgnoredValue(fact=definition.name, resource=label, reason=f"status {status!r}"))
        return None
    quantity = observation.get("valueQuantity")
    if not isinstance(quantity, dict) or quantity.get("value") is None:
        ignored.append(
            IgnoredValue(fact=definition.name, resource=label, reason="no numeric valueQuantity")
        )
        return None
    unit = quantity.get("code") or quantity.get("unit")
    try:
        value = convert(float(quantity["value"]), unit, definition.quantity)
    except UnitError as exc:
        alt = quantity.get("unit") if quantity.get("code") else None
        try:
            value = convert(float(quantity["value"]), alt, definition.quantity) if alt else None
        except UnitError:
            value = None
        if value is None:
            ignored.append(IgnoredValue(fact=definition.name, resource=label, reason=str(exc)))
            return None
    comparator = quantity.get("comparator") or ""
    unchanged = abs(value - float(quantity["value"])) < 1e-9 and normalise_unit_text(unit) == normalise_unit_text(definition.unit)
    original = "" if unchanged and not comparator else (
        f"{comparator}{quantity['value']} {quantity.get('unit') or unit or ''}".strip()
    )
    high = None
    ranges = observation.get("referenceRange") or []
    if ranges and isinstance(ranges[0], dict) and isinstance(ranges[0].get("high"), dict):
        high_q = ranges[0]["high"]
        try:
            if high_q.get("value") is not None:
                high = convert(
                    float(high_q["value"]), high_q.get("code") or high_q.get("unit") or unit,
                    definition.quantity,
                )
        except UnitError:
            high = None
    return LabValue(
        name=definition.name,
        value=value,
        unit=definition.unit,
        original=original,
        date=when,
        resource=label,
        code=_first_code(observation),
        reference_high=high,
    )


def select_labs(
    record: PatientRecord, catalog: LabCatalog, now: datetime
) -> tuple[dict[str, LabValue], dict[str, LabValue], list[IgnoredValue]]:
    """Pick, per lab fact, the value in its window (``recent``) and the latest ever (``last``).

    Only the Observations examined are validated with fhir.resources, newest first, stopping at the
    first usable one: older values of the same concept are never parsed.
    """
    buckets: dict[str, list[tuple[datetime, dict[str, Any]]]] = {}
    ignored: list[IgnoredValue] = []
    for observation in record.of_type("Observation"):
        if not wellformed_concept(observation.get("code")):
            record.validate(observation)  # raises, naming it: an unreadable code may hide a relevant lab
            continue
        hits = catalog.candidates(observation)
        if not hits:
            continue
        text = None
        names: set[str] = set()
        for name, pattern in hits:
            if pattern is not None:
                text = text if text is not None else observation_text(observation)
                if not pattern.search(text):
                    continue
            names.add(name)
        if not names:
            continue
        when = observation_date(observation)
        for name in names:
            if when is None:
                ignored.append(
                    IgnoredValue(fact=name, resource=resource_label(observation), reason="no date")
                )
            elif when > now:
                ignored.append(
                    IgnoredValue(
                        fact=name,
                        resource=resource_label(observation),
                        reason=f"dated {when.date()} after the evaluation time",
                    )
                )
            else:
                buckets.setdefault(name, []).append((when, observation))

    recent: dict[str, LabValue] = {}
    last: dict[str, LabValue] = {}
    for name, items in buckets.items():
        definition = catalog.definitions[name]
        cutoff = months_before(now, definition.lookback_months) if definition.lookback_months else None
        items.sort(key=lambda pair: pair[0], reverse=True)
        best: LabValue | None = None
        for when, observation in items:
            # by calendar date: a value dated "2025-11-01" is inside a 12-month window on 2026-11-01
            # whatever the time of day of "now"
            in_window = cutoff is None or when.date() >= cutoff.date()
            if definition.aggregate == "min" and not in_window:
                break
            record.validate(observation)
            value = _to_lab_value(definition, observation, when, ignored)
            if value is None:
                continue
            if definition.aggregate == "latest":
                last[name] = value
                if in_window:
                    recent[name] = value
                break
            if best is None or value.value < best.value:
                best = value
        if definition.aggregate == "min" and best is not None:
            recent[name] = best
            last[name] = best
    return recent, last, ignored


__all__ += ["observation_text", "select_labs", "USABLE_STATUSES"]
