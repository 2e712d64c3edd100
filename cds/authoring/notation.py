"""Compact test-patient notation -> FHIR R4 resources (after the AHRQ CQL Testing Framework).

Why a notation: informaticians write test patients by the dozen; a FHIR Observation is 25 lines of
JSON, the same fact here is one line a reviewer can read against the rule::

    LOINC#27873-9 38 uIU/mL 3 months ago          Observation (final), valueQuantity, effectiveDateTime
    SNOMED#763325000                               Condition, clinicalStatus active
    ICD10CM#E11.9 resolved 2 years ago             Condition, clinicalStatus resolved, recordedDate
    RXNORM#861007 active                           MedicationRequest (active, intent order)
    RXNORM#861007 draft                            drafted MedicationRequest (context.draftOrders on order hooks)
    statement RXNORM#861007 active                 MedicationStatement
    allergy RXNORM#6809                            AllergyIntolerance
    referral SNOMED#306278007 completed 1 year ago ServiceRequest
    device "U-500 insulin syringe" draft           DeviceRequest (name only)
    medication "Metformin 850mg tablets" active    MedicationRequest with code.text only
    RXNORM#1731315 active dose 100 U TID           insulin with a dosage (TDD = 300 U/day)
    LOINC#88020-3 = SNOMED#420913000               Observation with valueCodeableConcept
    observation "Insulin receptor antibody" = positive interpretation POS

A line is: ``[type] concept [value] [statuses...] [options...] [date]``.

* **type** (optional): observation, condition, medication, statement, allergy, referral, device,
  supply (or the FHIR resource type). Without it the code system decides: LOINC -> Observation,
  SNOMED / ICD10 / ICD10CM -> Condition, RXNORM -> MedicationRequest.
* **concept**: one or more ``SYSTEM#code`` (aliases LOINC, SNOMED/SCT, RXNORM, ICD10CM, ICD10, or a
  URI) optionally followed by a quoted display; or only a quoted name (``"Metformin 850mg tablets"``).
* **value** (Observation): ``38 uIU/mL``, ``= SNOMED#code``, ``= positive`` / ``= "some text"``.
* **statuses**: any status word of the resource type (clinical/verification status for Condition and
  AllergyIntolerance). Defaults: Observation final, Condition active, requests active.
* **options**: ``dose N UNIT TIMING`` (timing QD BID TID QID AM PM Q4H Q6H Q8H Q12H, or ``3/d``;
  repeatable; ``prn`` / ``iv`` after a dose mark it), ``ref-high N`` (Observation reference range
  high, in the value's unit), ``interpretation CODE``, ``id NAME``.
* **date** (last): ``today``, ``yesterday``, ``N days|weeks|months|years ago``, ``in N days``, or an
  ISO date. Observations default to today; other resources stay undated unless given.

Dates are relative to the case's evaluation time, so a test keeps its meaning forever.
A mapping (``{resourceType: Observation, code: LOINC#..., valueQuantity: 38 uIU/mL, ...}``) is the escape
hatch for anything else: shorthand strings in it are expanded the same way.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cds.valuesets import SYSTEM_ALIASES

__all__ = [
    "NotationError",
    "ParsedItem",
    "expand_mapping",
    "parse_code",
    "parse_item",
    "parse_quantity",
    "resolve_date",
]


class NotationError(ValueError):
    """A test-notation line cannot be read; the message says what was expected."""


UCUM = "http://unitsofmeasure.org"
TIMING_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

TYPE_WORDS: dict[str, str] = {
    "observation": "Observation", "obs": "Observation", "lab": "Observation",
    "condition": "Condition", "problem": "Condition",
    "medication": "MedicationRequest", "med": "MedicationRequest", "request": "MedicationRequest",
    "statement": "MedicationStatement",
    "allergy": "AllergyIntolerance",
    "referral": "ServiceRequest", "service": "ServiceRequest",
    "device": "DeviceRequest",
    "supply": "SupplyRequest",
}
for _t in ("Observation", "Condition", "MedicationRequest", "MedicationStatement", "AllergyIntolerance",
           "ServiceRequest", "DeviceRequest", "SupplyRequest"):
    TYPE_WORDS[_t.lower()] = _t

SYSTEM_TYPES = {  # resource type inferred from the first code's system
    SYSTEM_ALIASES["LOINC"]: "Observation",
    SYSTEM_ALIASES["SNOMED"]: "Condition",
    SYSTEM_ALIASES["ICD10CM"]: "Condition",
    SYSTEM_ALIASES["ICD10"]: "Condition",
    SYSTEM_ALIASES["RXNORM"]: "MedicationRequest",
}

# Status words per resource type: field -> allowed values (FHIR R4 value sets).
STATUSES: dict[str, dict[str, tuple[str, ...]]] = {
    "Observation": {"status": ("registered", "preliminary", "final", "amended", "corrected", "cancelled",
                               "entered-in-error", "unknown")},
    "Condition": {"clinicalStatus": ("active", "recurrence", "relapse", "inactive", "remission", "resolved"),
                  "verificationStatus": ("unconfirmed", "provisional", "differential", "confirmed", "refuted",
                                         "entered-in-error")},
    "MedicationRequest": {"status": ("active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped",
                                     "draft", "unknown")},
    "MedicationStatement": {"status": ("active", "completed", "entered-in-error", "intended", "stopped", "on-hold",
                                       "unknown", "not-taken")},
    "AllergyIntolerance": {"clinicalStatus": ("active", "inactive", "resolved"),
                           "verificationStatus": ("unconfirmed", "confirmed", "refuted", "entered-in-error")},
    "ServiceRequest": {"status": ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown")},
    "DeviceRequest": {"status": ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown")},
    "SupplyRequest": {"status": ("draft", "active", "suspended", "cancelled", "completed", "entered-in-error",
                                 "unknown")},
}
DEFAULT_STATUS = {"Observation": "final", "MedicationRequest": "active", "MedicationStatement": "active",
                  "ServiceRequest": "active", "DeviceRequest": "active", "SupplyRequest": "active"}
DATE_FIELD = {"Observation": "effectiveDateTime", "Condition": "recordedDate", "MedicationRequest": "authoredOn",
              "MedicationStatement": "effectiveDateTime", "AllergyIntolerance": "recordedDate",
              "ServiceRequest": "authoredOn", "DeviceRequest": "authoredOn", "SupplyRequest": "authoredOn"}
CONCEPT_FIELD = {"Observation": "code", "Condition": "code", "MedicationRequest": "medicationCodeableConcept",
                 "MedicationStatement": "medicationCodeableConcept", "AllergyIntolerance": "code",
                 "ServiceRequest": "code", "DeviceRequest": "codeCodeableConcept",
                 "SupplyRequest": "itemCodeableConcept"}
TIMING_CODES = ("QD", "BID", "TID", "QID", "AM", "PM", "Q4H", "Q6H", "Q8H", "Q12H")
ORDER_TYPES = ("MedicationRequest", "ServiceRequest", "DeviceRequest", "SupplyRequest")

_TOKEN = re.compile(r'"([^"]*)"|\'([^\']*)\'|(\S+)')
_CODE = re.compile(r"^([A-Za-z][A-Za-z0-9]*|https?://\S+?|urn:oid:[0-9.]+)#(\S+)$")
_NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?$")
_UNITS = {"day": 1, "days": 1, "d": 1, "week": 7, "weeks": 7, "wk": 7, "month": 0, "months": 0, "mo": 0,
          "year": -1, "years": -1, "y": -1}
_ISO = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?$")
_PER_DAY = re.compile(r"^(\d+)/d(ay)?$")


@dataclass
class _Token:
    text: str
    quoted: bool


def _tokens(line: str) -> list[_Token]:
    return [_Token(m.group(1) if m.group(1) is not None else (m.group(2) if m.group(2) is not None else m.group(3)),
                   m.group(3) is None) for m in _TOKEN.finditer(line)]


def parse_code(text: str) -> dict[str, str]:
    """``LOINC#27873-9`` -> a Coding dict; unknown system aliases are refused with the known list."""
    match = _CODE.match(text.strip())
    if not match:
        raise NotationError(f"cannot read code {text!r}: write SYSTEM#code, e.g. LOINC#27873-9")
    system, code = match.groups()
    if "://" in system or system.startswith("urn:"):
        return {"system": system, "code": code}
    uri = SYSTEM_ALIASES.get(system.upper())
    if uri is None:
        raise NotationError(f"unknown code system {system!r} in {text!r} (known: {', '.join(sorted(SYSTEM_ALIASES))})")
    return {"system": uri, "code": code}


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def resolve_date(text: str, now: datetime) -> str:
    """A relative or ISO date -> ISO 8601 dateTime text (``3 months ago`` on 2026-11-01 -> 2026-08-01...)."""
    words = text.strip().lower().split()
    if words in (["today"], ["now"]):
        moment = now
    elif words == ["yesterday"]:
        moment = now - timedelta(days=1)
    elif words == ["tomorrow"]:
        moment = now + timedelta(days=1)
    elif len(words) == 3 and words[2] == "ago" and _NUMBER.match(words[0]) and words[1] in _UNITS:
        moment = _shift(now, -float(words[0]), words[1])
    elif len(words) == 3 and words[0] == "in" and _NUMBER.match(words[1]) and words[2] in _UNITS:
        moment = _shift(now, float(words[1]), words[2])
    elif len(words) == 1 and _ISO.match(text.strip()):
        return text.strip()
    else:
        raise NotationError(f"cannot read date {text!r}: write today, '3 months ago', 'in 2 days' or 2026-01-31")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shift(now: datetime, amount: float, unit: str) -> datetime:
    days = _UNITS[unit]
    if days > 0:
        return now + timedelta(days=amount * days)
    if amount != int(amount):
        raise NotationError(f"use whole months/years ({amount:g} {unit}), or days")
    return _add_months(now, int(amount) * (12 if days < 0 else 1))


def _is_date_start(tokens: list[_Token], i: int) -> int:
    """How many tokens a date phrase starting at ``i`` takes (0 = none)."""
    if i >= len(tokens) or tokens[i].quoted:
        return 0
    first = tokens[i].text.lower()
    if first in ("today", "now", "yesterday", "tomorrow") or _ISO.match(tokens[i].text) and "-" in tokens[i].text:
        return 1
    if first in ("on", "@") and i + 1 < len(tokens):
        inner = _is_date_start(tokens, i + 1)
        return inner + 1 if inner else 0
    if i + 2 < len(tokens) and _NUMBER.match(first) and tokens[i + 1].text.lower() in _UNITS \
            and tokens[i + 2].text.lower() == "ago":
        return 3
    if first == "in" and i + 2 < len(tokens) and _NUMBER.match(tokens[i + 1].text) and tokens[i + 2].text.lower() in _UNITS:
        return 3
    return 0


def parse_quantity(text: str) -> dict[str, Any]:
    """``38 uIU/mL`` -> a FHIR Quantity (UCUM system)."""
    parts = text.strip().split(None, 1)
    if not parts or not _NUMBER.match(parts[0]):
        raise NotationError(f"cannot read quantity {text!r}: write e.g. '38 uIU/mL'")
    return _quantity(float(parts[0]), parts[1].strip() if len(parts) > 1 else None)


def _quantity(value: float, unit: str | None) -> dict[str, Any]:
    number: int | float = int(value) if value == int(value) and abs(value) < 1e15 else value
    quantity: dict[str, Any] = {"value": number}
    if unit:
        quantity.update({"unit": unit, "system": UCUM, "code": unit})
    return quantity


@dataclass
class ParsedItem:
    """One resource from a notation line; ``drafted`` ones belong in ``context.draftOrders``."""

    resource: dict[str, Any]
    drafted: bool = False
    explicit_id: bool = False
    notes: list[str] = field(default_factory=list)


def parse_item(line: str, now: datetime) -> ParsedItem:
    """Parse one notation line into a FHIR resource (no id or subject yet; see :mod:`testfile`)."""
    tokens = _tokens(line)
    if not tokens:
        raise NotationError("empty data line")
    i = 0
    rtype: str | None = None
    if not tokens[0].quoted and tokens[0].text.lower() in TYPE_WORDS:
        rtype = TYPE_WORDS[tokens[0].text.lower()]
        i = 1
    codings: list[dict[str, str]] = []
    text: str | None = None
    while i < len(tokens) and not tokens[i].quoted and "#" in tokens[i].text and tokens[i].text != "#":
        codings.append(parse_code(tokens[i].text))
        i += 1
    if i < len(tokens) and tokens[i].quoted:
        text = tokens[i].text
        i += 1
    if not codings and text is None:
        raise NotationError(f"{line!r}: expected a code (SYSTEM#code) or a quoted name after the type")
    if rtype is None:
        if not codings:
            raise NotationError(f"{line!r}: a name-only item needs its type first, e.g. medication \"{text}\"")
        rtype = SYSTEM_TYPES.get(codings[0]["system"])
        if rtype is None:
            raise NotationError(f"{line!r}: cannot tell the resource type from {codings[0]['system']}; put the type first")
    if text is not None and codings:
        for coding in codings:
            coding.setdefault("display", text)
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = codings
    if text is not None:
        concept["text"] = text

    resource: dict[str, Any] = {"resourceType": rtype, CONCEPT_FIELD[rtype]: concept}
    statuses: dict[str, str] = {}
    dosages: list[dict[str, Any]] = []
    date: str | None = None
    explicit_id = False
    while i < len(tokens):
        tok = tokens[i]
        word = tok.text.lower() if not tok.quoted else None
        span = _is_date_start(tokens, i)
        if span:
            if date is not None:
                raise NotationError(f"{line!r}: two dates")
            phrase = " ".join(t.text for t in tokens[i:i + span])
            date = resolve_date(phrase.removeprefix("on ").removeprefix("@ "), now)
            i += span
            continue
        if word == "=" and rtype == "Observation" and i + 1 < len(tokens):
            value = tokens[i + 1]
            if not value.quoted and _CODE.match(value.text):
                resource["valueCodeableConcept"] = {"coding": [parse_code(value.text)]}
            else:
                resource["valueString"] = value.text
            i += 2
            continue
        if word is not None and _NUMBER.match(word) and rtype == "Observation":
            unit = None
            if i + 1 < len(tokens) and not _is_date_start(tokens, i + 1) and not _is_keyword(tokens[i + 1], rtype):
                unit = tokens[i + 1].text
                i += 1
            if "valueQuantity" in resource:
                raise NotationError(f"{line!r}: two values")
            resource["valueQuantity"] = _quantity(float(word), unit)
            i += 1
            continue
        if word == "dose":
            dosage, i = _dose(tokens, i + 1, line)
            dosages.append(dosage)
            continue
        if word in ("prn", "iv") and dosages:
            if word == "prn":
                dosages[-1]["asNeededBoolean"] = True
            else:
                dosages[-1]["route"] = {"coding": [{"system": "http://snomed.info/sct", "code": "47625008",
                                                    "display": "Intravenous route"}]}
            i += 1
            continue
        if word == "ref-high" and i + 1 < len(tokens) and _NUMBER.match(tokens[i + 1].text):
            unit = (resource.get("valueQuantity") or {}).get("unit")
            resource["referenceRange"] = [{"high": _quantity(float(tokens[i + 1].text), unit)}]
            i += 2
            continue
        if word == "interpretation" and i + 1 < len(tokens):
            resource["interpretation"] = [{"coding": [{"system": INTERPRETATION_SYSTEM, "code": tokens[i + 1].text}]}]
            i += 2
            continue
        if word == "id" and i + 1 < len(tokens):
            resource["id"] = tokens[i + 1].text
            explicit_id = True
            i += 2
            continue
        matched = False
        for field_name, allowed in STATUSES[rtype].items():
            if word in allowed:
                if field_name in statuses:
                    raise NotationError(f"{line!r}: two {field_name} words")
                statuses[field_name] = word
                matched = True
                break
        if matched:
            i += 1
            continue
        hint = " (put a display in quotes)" if not tok.quoted else ""
        allowed_words = sorted({w for v in STATUSES[rtype].values() for w in v})
        raise NotationError(f"{line!r}: unexpected {tok.text!r}{hint}; {rtype} statuses are {', '.join(allowed_words)}")

    _apply_statuses(resource, rtype, statuses)
    if date is None and rtype == "Observation":
        date = resolve_date("today", now)
    if date is not None:
        resource[DATE_FIELD[rtype]] = date
        if rtype == "Condition":
            resource["onsetDateTime"] = date
        if rtype == "MedicationStatement":
            resource["dateAsserted"] = date
    if dosages:
        if rtype == "MedicationRequest":
            resource["dosageInstruction"] = dosages
        elif rtype == "MedicationStatement":
            resource["dosage"] = dosages
        else:
            raise NotationError(f"{line!r}: a dose belongs to a medication, not a {rtype}")
    drafted = resource.get("status") == "draft" and rtype in ORDER_TYPES
    return ParsedItem(resource=resource, drafted=drafted, explicit_id=explicit_id)


def _is_keyword(tok: _Token, rtype: str) -> bool:
    if tok.quoted:
        return False
    word = tok.text.lower()
    return word in {"dose", "prn", "iv", "ref-high", "interpretation", "id", "="} or any(
        word in allowed for allowed in STATUSES[rtype].values())


def _dose(tokens: list[_Token], i: int, line: str) -> tuple[dict[str, Any], int]:
    if i + 1 >= len(tokens) or not _NUMBER.match(tokens[i].text):
        raise NotationError(f"{line!r}: write a dose as 'dose 100 U TID' (or 'dose 20 U 3/d')")
    amount, unit = float(tokens[i].text), tokens[i + 1].text
    i += 2
    dosage: dict[str, Any] = {"doseAndRate": [{"doseQuantity": _quantity(amount, unit)}]}
    if i < len(tokens) and tokens[i].text.upper() in TIMING_CODES:
        dosage["timing"] = {"code": {"coding": [{"system": TIMING_SYSTEM, "code": tokens[i].text.upper()}]}}
        i += 1
    elif i < len(tokens) and (per_day_match := _PER_DAY.match(tokens[i].text)):
        per_day = int(per_day_match.group(1))
        dosage["timing"] = {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}
        i += 1
    else:
        raise NotationError(f"{line!r}: a dose needs a timing ({', '.join(TIMING_CODES)} or N/d)")
    dosage["text"] = " ".join(t.text for t in tokens[i - 3:i])
    return dosage, i


def _apply_statuses(resource: dict[str, Any], rtype: str, statuses: dict[str, str]) -> None:
    if rtype == "Condition":
        clinical = statuses.get("clinicalStatus", "active")
        resource["clinicalStatus"] = {"coding": [{"system": CONDITION_CLINICAL, "code": clinical}]}
        if "verificationStatus" in statuses:
            resource["verificationStatus"] = {"coding": [{"system": CONDITION_VERIFICATION,
                                                          "code": statuses["verificationStatus"]}]}
        return
    if rtype == "AllergyIntolerance":
        if "clinicalStatus" in statuses:
            resource["clinicalStatus"] = {"coding": [{"system": ALLERGY_CLINICAL, "code": statuses["clinicalStatus"]}]}
        if "verificationStatus" in statuses:
            resource["verificationStatus"] = {"coding": [{"system": ALLERGY_VERIFICATION,
                                                          "code": statuses["verificationStatus"]}]}
        return
    resource["status"] = statuses.get("status", DEFAULT_STATUS[rtype])
    if rtype in ("MedicationRequest", "DeviceRequest"):
        resource["intent"] = "order"
    if rtype == "ServiceRequest":
        resource["intent"] = "order"
    if rtype == "SupplyRequest":
        resource["quantity"] = {"value": 1}


_CONCEPT_KEYS = {"code", "medicationCodeableConcept", "valueCodeableConcept", "codeCodeableConcept",
                 "itemCodeableConcept", "clinicalStatus", "verificationStatus"}
_QUANTITY_KEYS = {"valueQuantity", "doseQuantity"}
_DATE_KEYS = {"effectiveDateTime", "recordedDate", "onsetDateTime", "authoredOn", "dateAsserted", "issued",
              "birthDate", "deceasedDateTime", "abatementDateTime", "start", "end", "occurrenceDateTime"}


def expand_mapping(data: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Expand shorthand inside a raw resource mapping (codes, quantities, relative dates), CQL-TF style."""
    def expand(key: str | None, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: expand(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(key, v) for v in value]
        if isinstance(value, str) and key in _CONCEPT_KEYS:
            if _CODE.match(value.split(" ", 1)[0]):
                code, _, display = value.partition(" ")
                coding = parse_code(code)
                if display:
                    coding["display"] = display
                return {"coding": [coding]}
            return {"text": value}
        if isinstance(value, str) and key in _QUANTITY_KEYS:
            return parse_quantity(value)
        if isinstance(value, str) and key in _DATE_KEYS and not _ISO.match(value):
            moment = resolve_date(value, now)
            return moment[:10] if key == "birthDate" else moment
        return value

    return {k: expand(k, v) for k, v in data.items()}
