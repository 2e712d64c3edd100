"""Typed facts the rules see, with enough provenance to explain every card.

Two views of the same facts exist on purpose:

* :class:`PatientFacts` is rich: values with units, dates and the id of the resource they came from,
  plus every value that was ignored and why. Card templates and ``cds explain`` read it.
* ``PatientFacts.values`` is flat (name -> bool/number/string) because durable_rules matches flat JSON
  facts; the rule compiler addresses these names. Every numeric fact ``x`` has a companion boolean
  ``x_known`` so that "missing" is explicit and never confused with 0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CodedItem",
    "FactSpec",
    "IgnoredValue",
    "InsulinDose",
    "UnreadableValue",
    "LabValue",
    "PatientFacts",
]

FactValue = bool | int | float | str


class FactSpec(BaseModel):
    """One name in the fact vocabulary: what rules may reference, its type and canonical unit."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: Literal["bool", "number", "string"]
    unit: str | None = None
    quantity: str | None = None  # units.py quantity key, for threshold conversion
    description: str
    choices: tuple[str, ...] | None = None  # allowed values of a string fact


class LabValue(BaseModel):
    """A measured value converted to its canonical unit, with where it came from.

    A value is a point (``comparator`` None, ``low == high == value``) or a bound (pathways.md 1,
    Comparators): "<15" is ``comparator "<"``, ``value 15``, ``high 15`` exclusive, ``low`` None. A
    unitless string for a concept with no report unit becomes the hull of its readings in every
    accepted unit (``low``/``high`` both set, ``comparator "~"``); a threshold is decided only when
    the whole interval lies on one side of it (:mod:`cds.rules.conditions`).
    """

    name: str
    value: float
    unit: str
    original: str
    date: datetime
    resource: str
    code: str | None = None
    reference_high: float | None = None
    comparator: str | None = None  # None (a point), "<", "<=", ">", ">=", or "~" (unit unknown)
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def model_post_init(self, _context: object) -> None:
        if self.comparator is None:
            self.low = self.high = self.value
            self.low_inclusive = self.high_inclusive = True

    @property
    def is_bound(self) -> bool:
        return self.comparator is not None

    @property
    def shown(self) -> str:
        """The value as a clinician reads it: ``60``, ``<15``, ``>=90`` (canonical unit, no unit)."""
        if self.comparator == "~":
            return f"{_fmt(self.low or 0)}-{_fmt(self.high or 0)}"
        return f"{self.comparator or ''}{_fmt(self.value)}"

    def describe(self) -> str:
        """``228 pmol/L on 2026-01-03`` (plus the original value when it was converted)."""
        if self.comparator == "~":
            shown = f"between {_fmt(self.low or 0)} and {_fmt(self.high or 0)} {self.unit} (unit not stated)"
        else:
            shown = f"{self.shown} {self.unit}"
        if self.original:  # set only when the value was converted or carries a comparator
            shown += f" ({self.original})"
        return f"{shown} on {self.date.date().isoformat()}"

    def __str__(self) -> str:  # templates print values with {{ lab.x }}
        return self.describe()


class IgnoredValue(BaseModel):
    """A value the engine saw but did not use, and why (shown by ``cds explain``)."""

    fact: str
    resource: str
    reason: str


class UnreadableValue(BaseModel):
    """A record that exists but whose value, unit, dose or date cannot be interpreted (pathways.md 1).

    Unreadable is the third state of a fact, beside a value and absent: it is never reported as
    "no X on record", and a safety rule that the value could decide must not go silent because of it
    (``safety-data-needed`` names it instead). The flat fact ``<name>_unreadable`` carries the state to
    the rules; this object carries what the card and ``cds explain`` show.
    """

    fact: str  # fact name, e.g. "egfr" or "insulin_tdd"
    resource: str  # "Observation/abc"
    raw: str  # what the record said, e.g. "see report" or "<60" (as written)
    reason: str  # why it could not be read, in words
    date: datetime | None = None
    title: str | None = None  # human name of the concept, e.g. "eGFR"

    def describe(self) -> str:
        """``eGFR of 2026-10-01 could not be read ('see report')``."""
        name = self.title or self.fact
        when = f" of {self.date.date().isoformat()}" if self.date else ""
        return f"{name}{when} could not be read ('{self.raw}')"

    def __str__(self) -> str:
        return self.describe()


class CodedItem(BaseModel):
    """A condition, medication, allergy, referral or device order that matched a value set."""

    valueset: str
    resource: str
    display: str
    status: str
    date: datetime | None = None
    drafted: bool = False
    #: a medication whose every dosage / validity period ended before now: recorded, not current
    ended: datetime | None = None

    def describe(self) -> str:
        when = f", {self.date.date().isoformat()}" if self.date else ""
        ended = f", period ended {self.ended.date().isoformat()}" if self.ended else ""
        return f"{self.display} ({self.status}{when}{ended})"

    def __str__(self) -> str:
        return self.describe()


class InsulinDose(BaseModel):
    """Insulin total daily dose from dosage instructions (pathways.md 1, TDD)."""

    tdd: float | None = None  # U/day over active insulins; None = unknown (never 0 by default)
    #: the quantified sum: equals ``tdd`` when complete; a lower bound when some dosage could not be
    #: quantified; None when nothing could be quantified (pathways.md 1, lower bound)
    tdd_at_least: float | None = None
    complete: bool = True
    tdd_with_drafts: float | None = None
    per_kg: float | None = None
    per_kg_at_least: float | None = None
    ml_dose_resources: list[str] = Field(default_factory=list)  # doses written in mL (U-500 safety)
    pump_resources: list[str] = Field(default_factory=list)  # basal rates (pump) on a non-IV route
    weight: LabValue | None = None
    items: list[str] = Field(default_factory=list)  # "Humulin R 100 U x 3/day = 300 U/day (MedicationRequest/1)"
    unknown_reasons: list[str] = Field(default_factory=list)


class PatientFacts(BaseModel):
    """Everything the rules and card templates know about one patient at one instant."""

    patient_id: str | None
    hook: str
    now: datetime
    deceased: bool = False
    age_years: float | None = None
    sex: str = "unknown"
    labs: dict[str, LabValue] = Field(default_factory=dict)
    last_labs: dict[str, LabValue] = Field(default_factory=dict)
    conditions: dict[str, list[CodedItem]] = Field(default_factory=dict)
    medications: dict[str, list[CodedItem]] = Field(default_factory=dict)
    allergies: dict[str, list[CodedItem]] = Field(default_factory=dict)
    procedures: dict[str, list[CodedItem]] = Field(default_factory=dict)
    devices: dict[str, list[CodedItem]] = Field(default_factory=dict)
    draft_ids: dict[str, list[str]] = Field(default_factory=dict)  # value set -> ["MedicationRequest/x"]
    active_request_ids: dict[str, list[str]] = Field(default_factory=dict)
    insulin: InsulinDose = Field(default_factory=InsulinDose)
    bmi_source: str | None = None
    bmi_z: float | None = None
    ignored: list[IgnoredValue] = Field(default_factory=list)
    unreadable: dict[str, UnreadableValue] = Field(default_factory=dict)  # fact name -> latest unreadable record
    notes: list[str] = Field(default_factory=list)
    values: dict[str, FactValue] = Field(default_factory=dict)
    definitions: dict[str, bool] = Field(default_factory=dict)  # def_<name> -> inferred by the engine


def _fmt(value: float) -> str:
    """Numbers as clinicians write them: no trailing zeros, at most 2 decimals."""
    if abs(value - round(value)) < 1e-9:
        return str(int(round(value)))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def fmt_number(value: float | None) -> str:
    return "unknown" if value is None else _fmt(value)


__all__ += ["fmt_number"]
