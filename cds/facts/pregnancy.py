"""Pregnancy recorded as an Observation (pathways.md 1, Derived concepts, pregnancy (b) and (c)).

The condition branch (a) stays in the rules (``condition: pregnancy, within: 10 months``); this module
reads the two Observation shapes real records use, which v2.1 missed:

(b) the **latest** pregnancy-status Observation (LOINC 82810-3, value set ``pregnancy-status``) dated
    in the last 10 months says *pregnant* (SNOMED 77386006 [V US Core] or LOINC LA15173-0 [V IPS]);
    a later status "not pregnant" (LA26683-5) supersedes it simply by being the latest;
(c) a **positive hCG** in the last 12 weeks [M: window chosen as a safety margin]: a qualitative test
    (value "positive"/"detected", or interpretation POS) or a quantitative hCG >= 25 IU/L [M] -
    unless a later negative hCG or a later "not pregnant" status is recorded.

Readings chosen where the catalogue is silent (safer = pregnancy recorded):
* "unless a later negative ..." applies to (c) only: a pregnant *status* is superseded only by a later
  status, never by a negative hCG (which may be a different test, or a miscarriage that the record
  should state explicitly);
* a status value that is neither pregnant nor not-pregnant (e.g. LA4489-6 "Unknown") is no evidence
  either way, so an older pregnant status is not looked at behind it (the latest status is "unknown");
* an hCG or status whose value cannot be read makes ``pregnancy_observation_unreadable`` true (a
  start rule treats it as "not known to be safe"); it never makes pregnancy true by itself.

Same-instant ties: a positive and a negative hCG at the same time count as positive (conservative).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from cds.facts.labs import USABLE_STATUSES, months_before, observation_date
from cds.facts.models import CodedItem, UnreadableValue
from cds.fhir.ingest import PatientRecord
from cds.fhir.validation import resource_label
from cds.units import UnitError, convert

__all__ = ["PregnancyEvidence", "find_pregnancy_observation"]

STATUS_LOOKBACK_MONTHS = 10  # pathways.md 1 (b)
HCG_LOOKBACK = timedelta(weeks=12)  # pathways.md 1 (c) [M]
HCG_POSITIVE_IU_L = 25.0  # pathways.md 1 (c): quantitative hCG >= 25 IU/L [M]

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
PREGNANT = {(SNOMED, "77386006"), (LOINC, "LA15173-0")}  # pathways.md 1 [V US Core / V IPS]
NOT_PREGNANT = {(LOINC, "LA26683-5")}  # pathways.md 1
_POSITIVE = re.compile(r"^\s*(positive|pos|detected|reactive|\+)\s*\.?\s*$", re.IGNORECASE)
_NEGATIVE = re.compile(r"^\s*(negative|neg|not detected|undetected|non-?reactive|-)\s*\.?\s*$", re.IGNORECASE)
_INTERPRETATION_POSITIVE = {"POS", "DET"}
_INTERPRETATION_NEGATIVE = {"NEG", "ND"}


class PregnancyEvidence:
    """What the Observations say: pregnant (with the item to show), unreadable records, notes."""

    def __init__(self) -> None:
        self.item: CodedItem | None = None
        self.unreadable: UnreadableValue | None = None
        self.notes: list[str] = []

    @property
    def pregnant(self) -> bool:
        return self.item is not None


def _codings(concept: Any) -> list[tuple[str | None, str | None, str]]:
    if not isinstance(concept, dict):
        return []
    return [(c.get("system"), c.get("code"), c.get("display") or c.get("code") or "")
            for c in concept.get("coding") or [] if isinstance(c, dict)]


def _concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    texts = [concept.get("text")] + [d for _s, _c, d in _codings(concept)]
    return next((t for t in texts if isinstance(t, str) and t), "")


def _status_value(observation: dict[str, Any]) -> str:
    """``pregnant``, ``not-pregnant``, ``unknown`` (a readable answer that says neither) or ``unreadable``."""
    concept = observation.get("valueCodeableConcept")
    if isinstance(concept, dict):
        codes = {(s, c) for s, c, _d in _codings(concept)}
        if codes & PREGNANT:
            return "pregnant"
        if codes & NOT_PREGNANT:
            return "not-pregnant"
        if codes:
            return "unknown"
    text = _concept_text(concept) if isinstance(concept, dict) else observation.get("valueString")
    if isinstance(text, str) and text.strip():
        if re.search(r"\bnot pregnant\b|\bnon-?pregnant\b", text, re.IGNORECASE):
            return "not-pregnant"
        if re.fullmatch(r"\s*pregnant\s*", text, re.IGNORECASE):
            return "pregnant"
        if re.search(r"\bunknown\b|\bunsure\b", text, re.IGNORECASE):
            return "unknown"
    return "unreadable"


def _hcg_value(observation: dict[str, Any]) -> str:
    """``positive``, ``negative`` or ``unreadable`` (pathways.md 1 (c))."""
    for concept in observation.get("interpretation") or []:
        codes = {c for _s, c, _d in _codings(concept)}
        if codes & _INTERPRETATION_POSITIVE:
            return "positive"
        if codes & _INTERPRETATION_NEGATIVE:
            return "negative"
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        comparator = quantity.get("comparator")
        try:
            value = convert(float(quantity["value"]), quantity.get("code") or quantity.get("unit"), "hcg")
        except (UnitError, TypeError, ValueError):
            return "unreadable"
        if comparator in ("<", "<=") and value <= HCG_POSITIVE_IU_L:
            return "negative"
        if comparator in (">", ">=") and value >= HCG_POSITIVE_IU_L:
            return "positive"
        if comparator in (None, "="):
            return "positive" if value >= HCG_POSITIVE_IU_L else "negative"
        return "unreadable"
    concept = observation.get("valueCodeableConcept")
    text = _concept_text(concept) if isinstance(concept, dict) else observation.get("valueString")
    if isinstance(text, str):
        if _POSITIVE.match(text):
            return "positive"
        if _NEGATIVE.match(text):
            return "negative"
    codes = {c for _s, c, _d in _codings(concept)}
    if codes & {"10828004", "LA6576-8"}:  # SNOMED Positive / LOINC answer Positive [M]
        return "positive"
    if codes & {"260385009", "LA6577-6"}:  # SNOMED Negative / LOINC answer Negative [M]
        return "negative"
    return "unreadable"


def find_pregnancy_observation(record: PatientRecord, valuesets: dict[str, Any], now: datetime) -> PregnancyEvidence:
    """Pregnancy from pregnancy-status and hCG Observations (see the module docstring)."""
    evidence = PregnancyEvidence()
    status_vs, hcg_vs = valuesets.get("pregnancy-status"), valuesets.get("hcg")
    if status_vs is None or hcg_vs is None:
        return evidence
    statuses: list[tuple[datetime, dict[str, Any], str]] = []
    hcgs: list[tuple[datetime, dict[str, Any], str]] = []
    status_cutoff = months_before(now, STATUS_LOOKBACK_MONTHS).date()
    for observation in record.of_type("Observation"):
        code = observation.get("code")
        is_status = status_vs.matches_concept(code)
        is_hcg = not is_status and hcg_vs.matches_concept(code)
        if not (is_status or is_hcg) or observation.get("status") not in USABLE_STATUSES:
            continue
        when = observation_date(observation)
        if when is None or when > now:
            continue
        if is_status:
            statuses.append((when, observation, _status_value(observation)))
        else:
            hcgs.append((when, observation, _hcg_value(observation)))
    statuses.sort(key=lambda t: t[0], reverse=True)
    hcgs.sort(key=lambda t: (t[0], t[2] == "positive"), reverse=True)  # ties: positive first

    latest_status = statuses[0] if statuses else None
    if latest_status is not None and latest_status[0].date() >= status_cutoff:
        when, observation, value = latest_status
        if value == "pregnant":
            evidence.item = _item(observation, when, "pregnancy status: pregnant")
        elif value == "unreadable":
            evidence.unreadable = _unreadable(observation, when, "Pregnancy status")
    for when, observation, value in hcgs:
        if now - when > HCG_LOOKBACK and when.date() < (now - HCG_LOOKBACK).date():
            break
        if value == "unreadable":
            evidence.unreadable = evidence.unreadable or _unreadable(observation, when, "hCG")
            continue
        if value == "negative":
            break  # the latest readable hCG is negative: no hCG evidence
        later_not_pregnant = [s for s in statuses if s[0] > when and s[2] == "not-pregnant"]
        if later_not_pregnant:
            evidence.notes.append(
                f"positive hCG {resource_label(observation)} of {when.date()} is followed by a 'not pregnant' "
                f"status ({resource_label(later_not_pregnant[0][1])}): not counted"
            )
            break
        if evidence.item is None:
            evidence.item = _item(observation, when, "positive hCG")
        break
    return evidence


def _item(observation: dict[str, Any], when: datetime, what: str) -> CodedItem:
    name = _concept_text(observation.get("code")) or "Observation"
    value = _concept_text(observation.get("valueCodeableConcept")) or observation.get("valueString") or ""
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict):
        unit = quantity.get("unit") or quantity.get("code") or ""
        value = f"{quantity.get('comparator') or ''}{quantity.get('value')} {unit}".strip()
    return CodedItem(valueset="pregnancy-observation", resource=resource_label(observation),
                     display=f"{name}: {value or what} ({what})", status="final", date=when)


def _unreadable(observation: dict[str, Any], when: datetime, title: str) -> UnreadableValue:
    raw = (_concept_text(observation.get("valueCodeableConcept")) or observation.get("valueString")
           or str(observation.get("valueQuantity") or "no value"))
    return UnreadableValue(fact="pregnancy_observation", resource=resource_label(observation), raw=str(raw),
                           reason="value neither positive/pregnant nor negative/not pregnant", date=when, title=title)
