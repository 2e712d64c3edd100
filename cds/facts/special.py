"""Facts that need more than a value-set lookup: NYHA class and anti-insulin-receptor antibodies.

Both are Observations read by code or text with their own positive/class logic (pathways.md 1).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from cds.facts.labs import USABLE_STATUSES, months_before, observation_date, observation_text
from cds.facts.matching import ConceptMatcher
from cds.facts.models import CodedItem
from cds.fhir.ingest import PatientRecord
from cds.fhir.validation import resource_label

__all__ = ["NYHA_CLASSES", "find_nyha_class", "find_receptor_antibody"]

NYHA_LOINC = "88020-3"  # codes.md B: Functional capacity NYHA (V2)
# SNOMED NYHA class findings: codes.md A/brief section 4 [V]
NYHA_CLASSES = {"420300004": 1, "421704003": 2, "420913000": 3, "422293003": 4}
NYHA_LOOKBACK_MONTHS = 12  # pathways.md 1: NYHA class look-back 12 months

_POSITIVE_INTERPRETATION = {"POS", "H", "A", "HH", "AA", "HU"}
_POSITIVE_TEXT = re.compile(r"^\s*(positive|detected|present|reactive)\b", re.IGNORECASE)
_NEGATED = re.compile(r"\b(not|non|no|negative|un)[\s-]*(detected|reactive|positive)?\b", re.IGNORECASE)


def find_nyha_class(record: PatientRecord, now: datetime) -> tuple[int, CodedItem] | None:
    """Latest usable NYHA class (1-4) recorded in the last 12 months, with the item that shows it, or None."""
    cutoff = months_before(now, NYHA_LOOKBACK_MONTHS)
    best: tuple[datetime, int, dict[str, Any]] | None = None
    for observation in record.of_type("Observation"):
        codes = {
            c.get("code")
            for c in (observation.get("code") or {}).get("coding") or []
            if isinstance(c, dict)
        }
        if NYHA_LOINC not in codes:
            continue
        when = observation_date(observation)
        if when is None or when > now or when.date() < cutoff.date():
            continue
        record.validate(observation)
        if observation.get("status") not in USABLE_STATUSES:
            continue
        value = observation.get("valueCodeableConcept") or {}
        klass = next(
            (
                NYHA_CLASSES[code]
                for c in value.get("coding") or []
                if isinstance(c, dict) and isinstance(code := c.get("code"), str) and code in NYHA_CLASSES
            ),
            None,
        )
        if klass is not None and (best is None or when > best[0]):
            best = (when, klass, observation)
    if best is None:
        return None
    when, klass, observation = best
    roman = {1: "I", 2: "II", 3: "III", 4: "IV"}[klass]
    return klass, CodedItem(
        valueset="nyha",
        resource=resource_label(observation),
        display=f"NYHA class {roman}",
        status=observation.get("status", ""),
        date=when,
    )


def _is_positive(observation: dict[str, Any]) -> bool:
    for interpretation in observation.get("interpretation") or []:
        for coding in (interpretation or {}).get("coding") or []:
            if isinstance(coding, dict) and str(coding.get("code", "")).upper() in _POSITIVE_INTERPRETATION:
                return True
    texts = [observation.get("valueString")]
    concept = observation.get("valueCodeableConcept")
    if isinstance(concept, dict):
        texts.append(concept.get("text"))
        texts += [c.get("display") for c in concept.get("coding") or [] if isinstance(c, dict)]
        # SNOMED 10828004 Positive, 260373001 Detected
        if any(
            isinstance(c, dict) and c.get("code") in ("10828004", "260373001")
            for c in concept.get("coding") or []
        ):
            return True
    for text in texts:
        if isinstance(text, str) and _POSITIVE_TEXT.search(text) and not _NEGATED.match(text.strip()):
            return True
    return False


def find_receptor_antibody(record: PatientRecord, matcher: ConceptMatcher, now: datetime) -> CodedItem | None:
    """A positive anti-insulin-*receptor* antibody result; insulin antibodies never count."""
    for observation in record.of_type("Observation"):
        sets = matcher.match("observation", observation.get("code"))
        if "insulin-receptor-antibodies" not in sets:
            continue
        if "insulin-antibodies" in sets:
            continue  # LOINC 60463-7 / 56546-5 are insulin antibodies, never receptor antibodies
        when = observation_date(observation)
        if when is not None and when > now:
            continue
        record.validate(observation)
        if observation.get("status") not in USABLE_STATUSES:
            continue
        if _is_positive(observation):
            return CodedItem(
                valueset="insulin-receptor-antibodies",
                resource=resource_label(observation),
                display=observation_text(observation) or "anti-insulin-receptor antibodies",
                status="positive",
                date=when,
            )
    return None
