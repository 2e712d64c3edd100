"""Insulin total daily dose (TDD) from dosage instructions (pathways.md section 1).

TDD = sum over active insulins of dose x administrations per day. Dose from
``doseAndRate.doseQuantity`` (U, [iU], IU, units) or the low end of ``doseRange``; administrations per
day from ``timing.repeat`` (frequency / period / periodUnit including ``wk``, ``when``, ``timeOfDay``)
or ``timing.code`` (QD, BID, TID, QID, AM, PM, Q4H, Q6H, Q8H, Q12H). Several dosage instructions add
up; PRN (``asNeeded``) and intravenous doses are excluded; one product described by both a
MedicationRequest and a MedicationStatement counts once. Anything unreadable makes TDD *unknown*, not 0.
"""

from __future__ import annotations

from typing import Any

from cds.facts.models import InsulinDose, LabValue, fmt_number
from cds.fhir.validation import resource_label
from cds.units import UnitError, convert

__all__ = ["administrations_per_day", "compute_insulin_dose", "dose_per_day"]

# Per-day counts of the HL7 v3 GTSAbbreviation codes the catalogue lists.
TIMING_CODES: dict[str, float] = {
    "QD": 1, "BID": 2, "TID": 3, "QID": 4, "AM": 1, "PM": 1,
    "Q4H": 6, "Q6H": 4, "Q8H": 3, "Q12H": 2,
}
PERIOD_UNIT_DAYS: dict[str, float] = {
    "s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30.4375, "a": 365.25,
}
INTRAVENOUS = ("47625008", "intravenous", "iv")  # SNOMED 47625008 Intravenous route


def administrations_per_day(timing: dict[str, Any] | None) -> float | None:
    """How many times a day a dosage is given, or None when the timing does not say."""
    if not isinstance(timing, dict):
        return None
    repeat = timing.get("repeat") if isinstance(timing.get("repeat"), dict) else None
    if repeat:
        when = repeat.get("when") or []
        time_of_day = repeat.get("timeOfDay") or []
        named_times = len(when) or len(time_of_day)
        frequency = repeat.get("frequency")
        period = repeat.get("period")
        unit = repeat.get("periodUnit")
        if period is not None and unit in PERIOD_UNIT_DAYS and float(period) > 0:
            # Each named event (when/timeOfDay) is an administration: [ACM, ACD, ACV] with
            # frequency 1 per day means three injections, as prescribers write "TID before meals".
            count = max(float(frequency or 0), float(named_times), 1.0 if frequency is None else 0.0)
            return count / (float(period) * PERIOD_UNIT_DAYS[unit])
        if named_times:
            return float(named_times)  # e.g. when: [ACM, ACV] = twice a day
    code = timing.get("code")
    if isinstance(code, dict):
        for coding in code.get("coding") or []:
            if isinstance(coding, dict) and str(coding.get("code", "")).upper() in TIMING_CODES:
                return TIMING_CODES[str(coding["code"]).upper()]
        text = str(code.get("text") or "").upper()
        if text in TIMING_CODES:
            return TIMING_CODES[text]
    return None


def _is_prn(dosage: dict[str, Any]) -> bool:
    return dosage.get("asNeededBoolean") is True or isinstance(dosage.get("asNeededCodeableConcept"), dict)


def _is_intravenous(dosage: dict[str, Any]) -> bool:
    route = dosage.get("route")
    if not isinstance(route, dict):
        return False
    words = [str(route.get("text") or "").lower()]
    for coding in route.get("coding") or []:
        if isinstance(coding, dict):
            words += [str(coding.get("code") or "").lower(), str(coding.get("display") or "").lower()]
    return any(w == "47625008" or w in ("iv", "intravenous") or "intravenous" in w for w in words)


def _dose_units(dosage: dict[str, Any]) -> float | None:
    for dose_and_rate in dosage.get("doseAndRate") or []:
        if not isinstance(dose_and_rate, dict):
            continue
        quantity = dose_and_rate.get("doseQuantity")
        if not isinstance(quantity, dict) and isinstance(dose_and_rate.get("doseRange"), dict):
            quantity = dose_and_rate["doseRange"].get("low")  # a range counts as its low value
        if isinstance(quantity, dict) and quantity.get("value") is not None:
            try:
                return convert(float(quantity["value"]), quantity.get("code") or quantity.get("unit"), "insulin_dose")
            except UnitError:
                try:
                    return convert(float(quantity["value"]), quantity.get("unit"), "insulin_dose")
                except UnitError:
                    return None
    return None


def dose_per_day(resource: dict[str, Any]) -> tuple[float | None, str]:
    """Units/day of one insulin request/statement, and a human-readable account (or why unknown)."""
    dosages = resource.get("dosageInstruction") or resource.get("dosage") or []
    if not dosages:
        return None, "no dosage instructions"
    total = 0.0
    parts: list[str] = []
    counted = 0
    for dosage in dosages:
        if not isinstance(dosage, dict):
            continue
        if _is_prn(dosage):
            parts.append("PRN dose excluded")
            continue
        if _is_intravenous(dosage):
            parts.append("intravenous dose excluded")
            continue
        units = _dose_units(dosage)
        if units is None:
            return None, "dose not in insulin units"
        per_day = administrations_per_day(dosage.get("timing"))
        if per_day is None:
            return None, "dosing frequency not stated"
        total += units * per_day
        counted += 1
        parts.append(f"{fmt_number(units)} U x {fmt_number(per_day)}/day")
    if counted == 0:
        return 0.0, "; ".join(parts) or "no scheduled doses"
    return total, " + ".join(parts)


def _product_key(concept: dict[str, Any] | None) -> str:
    if not isinstance(concept, dict):
        return ""
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            return f"{coding.get('system')}|{coding['code']}"
    return str(concept.get("text") or "").strip().lower()


def compute_insulin_dose(
    active: list[tuple[dict[str, Any], dict[str, Any] | None]],
    drafted: list[tuple[dict[str, Any], dict[str, Any] | None]],
    weight: LabValue | None,
) -> InsulinDose:
    """TDD over active insulins (each product once), with drafted insulins added for ``tdd_with_drafts``."""
    result = InsulinDose(weight=weight)
    requested: set[str] = set()
    total: float | None = 0.0
    for resource, concept in sorted(
        active, key=lambda pair: pair[0].get("resourceType") != "MedicationRequest"
    ):
        key = _product_key(concept)
        if resource.get("resourceType") == "MedicationRequest":
            requested.add(key)  # two requests for one product are two doses (e.g. 20 U + 10 U glargine)
        elif key and key in requested:
            # a statement describing a product already requested is the same regimen: count it once
            result.items.append(f"{resource_label(resource)}: same product already counted (an active request describes it)")
            continue
        units, how = dose_per_day(resource)
        if units is None:
            result.unknown_reasons.append(f"{resource_label(resource)}: {how}")
            total = None
        else:
            result.items.append(f"{resource_label(resource)}: {how} = {fmt_number(units)} U/day")
            if total is not None:
                total += units
    result.tdd = total
    with_drafts = total
    for resource, _concept in drafted:
        units, how = dose_per_day(resource)
        if units is None:
            result.unknown_reasons.append(f"{resource_label(resource)} (draft): {how}")
            with_drafts = None
        elif with_drafts is not None:
            result.items.append(f"{resource_label(resource)} (draft): {how} = {fmt_number(units)} U/day")
            with_drafts += units
    result.tdd_with_drafts = with_drafts
    if total is not None and weight is not None and weight.value > 0:
        result.per_kg = total / weight.value
    return result
