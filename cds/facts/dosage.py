"""When a medication's dosage periods have ended (pathways.md 1, Medications).

A request that is still ``active`` in an EHR is often a prescription whose course is over: every
dosage period ended (``timing.repeat.boundsPeriod.end``, or ``boundsDuration`` counted from
``authoredOn``), or the ``dispenseRequest.validityPeriod`` / ``MedicationStatement.effectivePeriod``
ended. Such a record still shows the drug was *recorded* (e.g. "any insulin product recorded") but it
is not a current dose: counting it made an insulin stopped in 2025 add 220 U/day to today's total.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cds.fhir.dates import parse_fhir_datetime

__all__ = ["dosage_ended", "dosages_of", "json_object", "medication_ended"]

# UCUM duration units of Timing.repeat.boundsDuration, in days
_DURATION_DAYS = {
    "s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30.4375, "a": 365.25,
    "day": 1, "days": 1, "week": 7, "weeks": 7, "month": 30.4375, "months": 30.4375, "year": 365.25,
}


def json_object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: a missing or malformed element reads as absent
    (typed, so that ``json_object(x).get(...)`` chains are checked instead of going through ``Any | None``)."""
    return value if isinstance(value, dict) else {}


def dosages_of(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Dosage instructions of a MedicationRequest (``dosageInstruction``) or statement (``dosage``)."""
    dosages = resource.get("dosageInstruction") or resource.get("dosage") or []
    return [d for d in dosages if isinstance(d, dict)] if isinstance(dosages, list) else []


def _authored(resource: dict[str, Any]) -> datetime | None:
    period = json_object(resource.get("effectivePeriod"))
    return parse_fhir_datetime(
        resource.get("authoredOn") or resource.get("effectiveDateTime") or period.get("start")
    )


def dosage_ended(dosage: dict[str, Any], resource: dict[str, Any], now: datetime) -> datetime | None:
    """The end of this dosage's period when it is before ``now``, else None (open, current or unknown)."""
    repeat = json_object(json_object(dosage.get("timing")).get("repeat"))
    bounds = repeat.get("boundsPeriod")
    if isinstance(bounds, dict):
        end = parse_fhir_datetime(bounds.get("end"))
        if end is not None and end < now:
            return end
    duration = repeat.get("boundsDuration")
    if isinstance(duration, dict) and isinstance(duration.get("value"), (int, float)):
        unit = str(duration.get("code") or duration.get("unit") or "").strip().lower()
        start = parse_fhir_datetime(bounds.get("start")) if isinstance(bounds, dict) else None
        start = start or _authored(resource)
        if unit in _DURATION_DAYS and start is not None:
            end = start + timedelta(days=float(duration["value"]) * _DURATION_DAYS[unit])
            if end < now:
                return end
    return None


def medication_ended(resource: dict[str, Any], now: datetime) -> datetime | None:
    """When the whole record ended before ``now``: its validity / effective period, or every dosage
    period. None when it is (or may be) current. A record with no dosage is judged by its periods only."""
    dispense = json_object(resource.get("dispenseRequest"))
    periods = [dispense.get("validityPeriod")]
    if resource.get("resourceType") == "MedicationStatement":
        periods.append(resource.get("effectivePeriod"))
    for period in periods:
        if isinstance(period, dict):
            end = parse_fhir_datetime(period.get("end"))
            if end is not None and end < now:
                return end
    dosages = dosages_of(resource)
    if not dosages:
        return None
    ends = [dosage_ended(d, resource, now) for d in dosages]
    if all(e is not None for e in ends):
        return max(e for e in ends if e is not None)
    return None
