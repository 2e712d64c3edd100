"""Insulin total daily dose (TDD) from dosage instructions (pathways.md section 1).

TDD = sum over active insulins of dose x administrations per day. Dose from
``doseAndRate.doseQuantity`` (U, [iU], IU, units) or the low end of ``doseRange``; administrations per
day from ``timing.repeat`` (frequency / period / periodUnit including ``wk``, ``when``, ``timeOfDay``)
or ``timing.code`` (QD, BID, TID, QID, AM, PM, Q4H, Q6H, Q8H, Q12H). Several dosage instructions add
up; PRN (``asNeeded``) and intravenous doses are excluded; one product described by both a
MedicationRequest and a MedicationStatement counts once.

Catalogue v3 (pathways.md 1): dosages whose period ended are skipped; a pump basal ``rateQuantity`` /
``rateRatio`` in units per hour counts x 24, or x the hours its timing covers (segments add by their
hours; segments that cannot be placed count as the lowest rate x 24); a dose in mL of a product of
known concentration (U-100/200/300/500, icodec 700) is mL x U/mL. A dosage that cannot be quantified
(e.g. "sliding scale per protocol" on a schedule) makes the TDD *incomplete*: ``tdd`` stays unknown
and ``tdd_at_least`` carries the known sum, which may decide "TDD > T" but never "TDD <= T". Nothing
quantifiable leaves both unknown: TDD unknown is never TDD 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds.facts.dosage import dosage_ended, dosages_of, json_object
from cds.facts.models import InsulinDose, LabValue, fmt_number
from cds.fhir.validation import resource_label
from cds.units import UnitError, convert

__all__ = [
    "DoseAccount",
    "administrations_per_day",
    "compute_insulin_dose",
    "concentration_u_per_ml",
    "dose_account",
    "dose_per_day",
]

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


_ML_UNITS = frozenset({"ml", "milliliter", "millilitre", "milliliters", "millilitres", "cc", "cm3"})
_HOUR_UNITS = {"h": 1.0, "hr": 1.0, "hour": 1.0, "hours": 1.0, "min": 1 / 60, "d": 24.0, "day": 24.0}
# pathways.md 1: known concentrations U-100, U-200, U-300, U-500 and insulin icodec 700 U/mL
_CONCENTRATION_RE = re.compile(
    r"\bU[- ]?(100|200|300|500)\b|\b(100|200|300|500|700)\s*(?:UNT|units?|IU|U)\s*/\s*mL\b", re.IGNORECASE
)
_ICODEC_RE = re.compile(r"\bicodec\b|\bAwiqli\b", re.IGNORECASE)
_TOUJEO_RE = re.compile(r"\bToujeo\b", re.IGNORECASE)


def concentration_u_per_ml(concept: dict[str, Any] | None) -> float | None:
    """The product's insulin concentration in U/mL when its name states one, else None."""
    if not isinstance(concept, dict):
        return None
    texts = [str(concept.get("text") or "")]
    texts += [str(c.get("display") or "") for c in concept.get("coding") or [] if isinstance(c, dict)]
    for text in texts:
        if _ICODEC_RE.search(text):
            return 700.0
        match = _CONCENTRATION_RE.search(text)
        if match:
            return float(match.group(1) or match.group(2))
        if _TOUJEO_RE.search(text):
            return 300.0  # Toujeo is insulin glargine 300 U/mL only
    return None


@dataclass
class DoseAccount:
    """Units/day of one insulin request/statement: the quantified sum and whether it is complete."""

    units: float = 0.0  # sum of the quantified dosages (a lower bound when not complete)
    complete: bool = True
    quantified: int = 0  # how many dosages were quantified
    parts: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why a dosage could not be quantified
    dose_in_ml: bool = False
    pump_rate: bool = False

    @property
    def how(self) -> str:
        return " + ".join(self.parts) or "; ".join(self.reasons) or "no scheduled doses"


def _quantity_units(quantity: Any, concentration: float | None) -> tuple[float | None, bool, str | None]:
    """(units, in_ml, why_not) of a dose quantity."""
    raw_value = quantity.get("value") if isinstance(quantity, dict) else None
    if not isinstance(quantity, dict) or not isinstance(raw_value, (int, float)) or isinstance(raw_value, bool):
        return None, False, "no dose"
    value = float(raw_value)
    for unit in (quantity.get("code"), quantity.get("unit")):
        try:
            return convert(value, unit, "insulin_dose"), False, None
        except UnitError:
            continue
    unit_text = str(quantity.get("code") or quantity.get("unit") or "").strip().lower()
    if unit_text in _ML_UNITS:
        if concentration is None:
            return None, True, f"dose {fmt_number(value)} mL of a product whose concentration is not stated"
        return value * concentration, True, None
    return None, False, f"dose unit {quantity.get('unit') or quantity.get('code')!r} is not insulin units"


def _dose_units(dosage: dict[str, Any], concentration: float | None = None) -> tuple[float | None, bool, str | None]:
    why = "no dose"
    in_ml = False
    for dose_and_rate in dosage.get("doseAndRate") or []:
        if not isinstance(dose_and_rate, dict):
            continue
        quantity = dose_and_rate.get("doseQuantity")
        if not isinstance(quantity, dict) and isinstance(dose_and_rate.get("doseRange"), dict):
            quantity = dose_and_rate["doseRange"].get("low")  # a range counts as its low value
        if quantity is None:
            continue
        units, ml, reason = _quantity_units(quantity, concentration)
        in_ml = in_ml or ml
        if units is not None:
            return units, in_ml, None
        why = reason or why
    return None, in_ml, why


def _rate_u_per_hour(dosage: dict[str, Any]) -> tuple[float | None, bool]:
    """(U/h, has a rate) of a pump basal rate: rateQuantity in U/h, or rateRatio U per time."""
    for dose_and_rate in dosage.get("doseAndRate") or []:
        if not isinstance(dose_and_rate, dict):
            continue
        rate = dose_and_rate.get("rateQuantity")
        if isinstance(rate, dict):
            unit = str(rate.get("code") or rate.get("unit") or "").replace(" ", "")
            if "/" in unit and isinstance(rate.get("value"), (int, float)):
                numerator, _, denominator = unit.rpartition("/")
                hours = _HOUR_UNITS.get(denominator.lower())
                try:
                    units = convert(float(rate["value"]), numerator, "insulin_dose")
                except UnitError:
                    units = None
                if hours and units is not None:
                    return units / hours, True
            return None, True
        ratio = dose_and_rate.get("rateRatio")
        if isinstance(ratio, dict):
            num, den = ratio.get("numerator") or {}, ratio.get("denominator") or {}
            try:
                units = convert(float(num["value"]), num.get("code") or num.get("unit"), "insulin_dose")
                den_value = float(den.get("value", 1) or 1)
                hours = _HOUR_UNITS.get(str(den.get("code") or den.get("unit") or "").strip().lower())
            except (KeyError, TypeError, ValueError, UnitError):
                return None, True
            if hours and den_value > 0:
                return units / (den_value * hours), True
            return None, True
    return None, False


def _segment_hours(dosage: dict[str, Any]) -> float | None:
    """Hours of the day a basal rate runs when its timing says so (``repeat.duration``), else None."""
    repeat = json_object(json_object(dosage.get("timing")).get("repeat"))
    duration = repeat.get("duration")
    unit = _HOUR_UNITS.get(str(repeat.get("durationUnit") or "").lower())
    if isinstance(duration, (int, float)) and unit and duration > 0:
        return min(24.0, float(duration) * unit)
    return None


def _segment_start(dosage: dict[str, Any]) -> float | None:
    repeat = json_object(json_object(dosage.get("timing")).get("repeat"))
    times = repeat.get("timeOfDay") or []
    if isinstance(times, list) and len(times) == 1 and isinstance(times[0], str):
        match = re.match(r"^(\d{1,2}):(\d{2})", times[0])
        if match:
            return int(match.group(1)) + int(match.group(2)) / 60
    return None


def _basal_units(rates: list[tuple[float, dict[str, Any]]]) -> tuple[float, str]:
    """U/day of the basal-rate segments of one order (pathways.md 1, basal rate)."""
    if len(rates) == 1:
        rate, dosage = rates[0]
        hours = _segment_hours(dosage) or 24.0
        return rate * hours, f"{fmt_number(rate)} U/h x {fmt_number(hours)} h"
    # Each list keeps only the known values: it is complete (one per segment) or that way is not used.
    segment_hours = [h for _r, d in rates if (h := _segment_hours(d)) is not None]
    if len(segment_hours) == len(rates):
        total = sum(r * h for (r, _d), h in zip(rates, segment_hours))
        return total, " + ".join(f"{fmt_number(r)} U/h x {fmt_number(h)} h" for (r, _d), h in zip(rates, segment_hours))
    starts = [s for _r, d in rates if (s := _segment_start(d)) is not None]
    if len(starts) == len(rates) and len(set(starts)) == len(starts):
        ordered = sorted(zip(starts, (r for r, _d in rates)))
        total = 0.0
        parts: list[str] = []
        for i, (start, rate) in enumerate(ordered):
            end = ordered[i + 1][0] if i + 1 < len(ordered) else ordered[0][0] + 24
            span = (end - start) % 24 or 24.0
            total += rate * span
            parts.append(f"{fmt_number(rate)} U/h x {fmt_number(span)} h")
        return total, " + ".join(parts)
    lowest = min(r for r, _d in rates)
    return lowest * 24, f"basal segments cannot be placed in the day: lowest rate {fmt_number(lowest)} U/h x 24 h"


def dose_account(resource: dict[str, Any], now: datetime | None = None, concentration: float | None = None) -> DoseAccount:
    """Units/day of one insulin request/statement, with what could not be quantified."""
    account = DoseAccount()
    dosages = dosages_of(resource)
    if not dosages:
        account.complete = False
        account.reasons.append("no dosage instructions")
        return account
    rates: list[tuple[float, dict[str, Any]]] = []
    for dosage in dosages:
        if _is_prn(dosage):
            account.parts.append("PRN dose excluded")
            continue
        if _is_intravenous(dosage):
            account.parts.append("intravenous dose excluded")
            continue
        if now is not None:
            ended = dosage_ended(dosage, resource, now)
            if ended is not None:
                account.parts.append(f"dosage period ended {ended.date().isoformat()} (excluded)")
                continue
        rate, has_rate = _rate_u_per_hour(dosage)
        if has_rate:
            account.pump_rate = True
            if rate is None:
                account.complete = False
                account.reasons.append("basal rate not in insulin units per time")
            else:
                rates.append((rate, dosage))
            continue
        units, in_ml, why = _dose_units(dosage, concentration)
        account.dose_in_ml = account.dose_in_ml or in_ml
        if units is None:
            account.complete = False
            text = f" ({dosage['text']!r})" if isinstance(dosage.get("text"), str) else ""
            account.reasons.append(f"{why or 'dose not in insulin units'}{text}")
            continue
        per_day = administrations_per_day(dosage.get("timing"))
        if per_day is None:
            account.complete = False
            account.reasons.append(f"{fmt_number(units)} U: dosing frequency not stated")
            continue
        account.units += units * per_day
        account.quantified += 1
        shown = f"{fmt_number(units)} U" + (" (from mL)" if in_ml else "")
        account.parts.append(f"{shown} x {fmt_number(per_day)}/day")
    if rates:
        units, how = _basal_units(rates)
        account.units += units
        account.quantified += 1
        account.parts.append(f"basal {how}")
    return account


def dose_per_day(resource: dict[str, Any], now: datetime | None = None) -> tuple[float | None, str]:
    """Units/day of one insulin request/statement (None when not every dosage is quantified), and how."""
    account = dose_account(resource, now)
    if not account.complete:
        return None, "; ".join(account.reasons)
    return account.units, account.how


def _product_key(concept: dict[str, Any] | None) -> str:
    if not isinstance(concept, dict):
        return ""
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            return f"{coding.get('system')}|{coding['code']}"
    return str(concept.get("text") or "").strip().lower()


def _account(result: InsulinDose, resource: dict[str, Any], concept: dict[str, Any] | None,
             now: datetime | None) -> tuple[DoseAccount, str]:
    """One order's dose account and label, noting mL doses and pump rates on ``result`` (active or drafted alike)."""
    account = dose_account(resource, now, concentration_u_per_ml(concept))
    label = resource_label(resource)
    if account.dose_in_ml:
        result.ml_dose_resources.append(label)
    if account.pump_rate:
        result.pump_resources.append(label)
    return account, label


def compute_insulin_dose(
    active: list[tuple[dict[str, Any], dict[str, Any] | None]],
    drafted: list[tuple[dict[str, Any], dict[str, Any] | None]],
    weight: LabValue | None,
    now: datetime | None = None,
) -> InsulinDose:
    """TDD over active insulins (each product once), with drafted insulins added for ``tdd_with_drafts``."""
    result = InsulinDose(weight=weight)
    requested: set[str] = set()
    known = 0.0
    complete = True
    quantified = 0
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
        account, label = _account(result, resource, concept, now)
        if account.quantified or account.complete:
            parts = " + ".join(account.parts) or "no scheduled doses"
            result.items.append(f"{label}: {parts} = {fmt_number(account.units)} U/day"
                                + ("" if account.complete else " (known part)"))
        if not account.complete:
            complete = False
            result.unknown_reasons += [f"{label}: {reason}" for reason in account.reasons]
        known += account.units
        quantified += account.quantified
    result.complete = complete
    result.tdd = known if complete else None
    if complete or quantified:
        result.tdd_at_least = known
    with_drafts: float | None = result.tdd
    for resource, concept in drafted:
        account, label = _account(result, resource, concept, now)
        if not account.complete:
            result.unknown_reasons += [f"{label} (draft): {reason}" for reason in account.reasons]
            with_drafts = None
        elif with_drafts is not None:
            result.items.append(f"{label} (draft): {account.how} = {fmt_number(account.units)} U/day")
            with_drafts += account.units
    result.tdd_with_drafts = with_drafts
    if weight is not None and weight.value > 0:
        if result.tdd is not None:
            result.per_kg = result.tdd / weight.value
        if result.tdd_at_least is not None:
            result.per_kg_at_least = result.tdd_at_least / weight.value
    return result
