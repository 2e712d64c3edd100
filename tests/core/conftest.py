"""Shared fixtures for the engine-core tests: one real Engine and a compact FHIR R4 builder.

The builder makes small, valid FHIR payloads so each test states only what it is about:
``patient(age, gender)``, ``obs(loinc, value, unit, days_ago)``, ``cond(code)``, ``medreq(code)``,
``dosage(...)``, then ``bundle(...)`` or ``request(hook, ...)``. Dates are relative to :data:`NOW`,
the fixed evaluation instant every test passes to the engine, so results never depend on the clock.
Everything runs through the real engine and the real value sets (``Engine.load()``): no mocks.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cds.engine import Engine

NOW = "2026-11-01T09:00:00Z"
NOW_DT = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
PID = "p1"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
UCUM = "http://unitsofmeasure.org"

# LOINC codes used by rulesets/labs.yaml (through rulesets/valuesets/*.yaml)
FASTING_INSULIN = "27873-9"
INSULIN_RANDOM = "20448-7"
TG = "2571-8"
GLUCOSE = "2345-7"
FASTING_GLUCOSE = "1558-6"
HBA1C = "4548-4"
EGFR = "33914-3"
ALT = "1742-6"
LEPTIN = "21365-2"
ADIPONECTIN = "47828-9"
WEIGHT = "29463-7"
HEIGHT = "8302-2"
BMI = "39156-5"
NYHA = "88020-3"

# RxNorm
METFORMIN_INGREDIENT = "6809"
METFORMIN_SCD = "861007"  # metformin hydrochloride 500 MG Oral Tablet
INSULIN_GLARGINE_SCD = "311041"  # insulin glargine 100 UNT/ML Injectable Solution
PREDNISONE = "8640"

_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


def when(days_ago: float) -> str:
    """An ISO dateTime ``days_ago`` days before NOW (negative = in the future)."""
    return (NOW_DT - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")


def ref(pid: str = PID) -> dict[str, str]:
    return {"reference": f"Patient/{pid}"}


def patient(age: float | None = 40, gender: str = "female", *, pid: str = PID, **extra: Any) -> dict[str, Any]:
    """A Patient aged ``age`` years (birthday 100 days after the anniversary, so the age is unambiguous)."""
    resource: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": gender}
    if age is not None:
        born = NOW_DT.date().replace(year=NOW_DT.year - int(age)) - timedelta(days=100)
        resource["birthDate"] = born.isoformat()
    resource.update(extra)
    return resource


def quantity(value: Any, unit: str | None, *, code: str | None = "same") -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit is not None:
        q["unit"] = unit
    if code == "same":
        code = unit
    if code is not None:
        q["system"] = UCUM
        q["code"] = code
    return q


def obs(
    loinc: str,
    value: Any = None,
    unit: str | None = None,
    days_ago: float = 30,
    *,
    status: str = "final",
    text: str | None = None,
    display: str | None = None,
    system: str = LOINC,
    pid: str = PID,
    rid: str | None = None,
    code: str | None = "same",
    **extra: Any,
) -> dict[str, Any]:
    """An Observation of ``loinc`` = ``value`` ``unit``, effective ``days_ago`` days before NOW."""
    coding: dict[str, Any] = {"system": system, "code": loinc}
    if display:
        coding["display"] = display
    concept: dict[str, Any] = {"coding": [coding]}
    if text:
        concept["text"] = text
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid or _next_id("obs"),
        "status": status,
        "code": concept,
        "subject": ref(pid),
        "effectiveDateTime": when(days_ago),
    }
    if value is not None:
        resource["valueQuantity"] = quantity(value, unit, code=code)
    resource.update(extra)
    return resource


def concept(code: str | None, system: str = SNOMED, display: str | None = None, text: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {}
    if code is not None:
        coding: dict[str, Any] = {"system": system, "code": code}
        if display:
            coding["display"] = display
        c["coding"] = [coding]
    if text:
        c["text"] = text
    return c


def cond(
    code: str | None,
    system: str = SNOMED,
    *,
    display: str | None = None,
    text: str | None = None,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    days_ago: float = 100,
    pid: str = PID,
    rid: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Condition with the given code and statuses, recorded ``days_ago`` days before NOW."""
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid or _next_id("cond"),
        "code": concept(code, system, display, text),
        "subject": ref(pid),
        "recordedDate": when(days_ago),
    }
    if clinical is not None:
        resource["clinicalStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]
        }
    if verification is not None:
        resource["verificationStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]
        }
    resource.update(extra)
    return resource


def dosage(
    dose: float | None = 10,
    unit: str = "U",
    *,
    frequency: int | None = None,
    period: float | None = None,
    period_unit: str | None = None,
    when_: list[str] | None = None,
    time_of_day: list[str] | None = None,
    timing_code: str | None = None,
    prn: bool = False,
    route: dict[str, Any] | None = None,
    dose_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A Dosage: ``dose`` ``unit`` with a timing.repeat and/or timing.code."""
    d: dict[str, Any] = {}
    repeat: dict[str, Any] = {}
    if frequency is not None:
        repeat["frequency"] = frequency
    if period is not None:
        repeat["period"] = period
    if period_unit is not None:
        repeat["periodUnit"] = period_unit
    if when_:
        repeat["when"] = when_
    if time_of_day:
        repeat["timeOfDay"] = time_of_day
    timing: dict[str, Any] = {}
    if repeat:
        timing["repeat"] = repeat
    if timing_code:
        timing["code"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", "code": timing_code}]
        }
    if timing:
        d["timing"] = timing
    if dose_range is not None:
        d["doseAndRate"] = [{"doseRange": {"low": quantity(dose_range[0], unit), "high": quantity(dose_range[1], unit)}}]
    elif dose is not None:
        d["doseAndRate"] = [{"doseQuantity": quantity(dose, unit)}]
    if prn:
        d["asNeededBoolean"] = True
    if route is not None:
        d["route"] = route
    return d


def daily(dose: float, unit: str = "U") -> dict[str, Any]:
    return dosage(dose, unit, frequency=1, period=1, period_unit="d")


def medreq(
    code: str | None = METFORMIN_SCD,
    *,
    system: str = RXNORM,
    display: str | None = None,
    text: str | None = None,
    status: str = "active",
    dosages: list[dict[str, Any]] | None = None,
    days_ago: float = 60,
    pid: str = PID,
    rid: str | None = None,
    resource_type: str = "MedicationRequest",
    medication_reference: str | None = None,
    contained: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A MedicationRequest (or MedicationStatement) for ``code``; ``medication_reference`` replaces the concept."""
    resource: dict[str, Any] = {
        "resourceType": resource_type,
        "id": rid or _next_id("med"),
        "status": status,
        "subject": ref(pid),
    }
    if resource_type == "MedicationRequest":
        resource["intent"] = "order"
        resource["authoredOn"] = when(days_ago)
        if dosages is not None:
            resource["dosageInstruction"] = dosages
    else:
        resource["effectiveDateTime"] = when(days_ago)
        if dosages is not None:
            resource["dosage"] = dosages
    if medication_reference is not None:
        resource["medicationReference"] = {"reference": medication_reference}
    else:
        resource["medicationCodeableConcept"] = concept(code, system, display, text)
    if contained is not None:
        resource["contained"] = contained
    resource.update(extra)
    return resource


def medstmt(code: str | None = METFORMIN_SCD, **kwargs: Any) -> dict[str, Any]:
    return medreq(code, resource_type="MedicationStatement", **kwargs)


def medication(code: str | None, *, system: str = RXNORM, display: str | None = None,
               text: str | None = None, rid: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": rid or _next_id("medication"),
            "code": concept(code, system, display, text)}


def allergy(code: str, *, system: str = RXNORM, clinical: str | None = "active",
            verification: str | None = "confirmed", pid: str = PID, text: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "id": _next_id("allergy"),
        "code": concept(code, system, text=text),
        "patient": ref(pid),
    }
    if clinical is not None:
        resource["clinicalStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": clinical}]
        }
    if verification is not None:
        resource["verificationStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                        "code": verification}]
        }
    return resource


def bundle(*resources: dict[str, Any], pt: dict[str, Any] | None = None, bundle_type: str = "collection",
           with_patient: bool = True) -> dict[str, Any]:
    """A Bundle holding a Patient (``pt`` or a 40-year-old woman) and ``resources``; fullUrl = urn:uuid:<id>."""
    items = list(resources)
    if with_patient:
        items = [pt or patient()] + items
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [{"fullUrl": f"urn:uuid:{r.get('id', _next_id('x'))}", "resource": r} for r in items],
    }


def request(hook: str, *resources: dict[str, Any], pt: dict[str, Any] | None = None,
            drafts: list[dict[str, Any]] | None = None, pid: str = PID,
            prefetch: dict[str, Any] | None = None) -> dict[str, Any]:
    """A CDS Hooks 2.0 request with prefetch {patient, everything} and optional draftOrders."""
    context: dict[str, Any] = {"userId": "Practitioner/1", "patientId": pid}
    if hook != "patient-view":
        context["draftOrders"] = bundle(*(drafts or []), with_patient=False)
    if prefetch is None:
        prefetch = {"patient": pt or patient(pid=pid), "everything": bundle(*resources, with_patient=False,
                                                                            bundle_type="searchset")}
    return {
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "hook": hook,
        "context": context,
        "prefetch": prefetch,
    }


def sir_fires(age: float = 40, insulin_uiu: float = 38.0, bmi: float = 22.5) -> dict[str, Any]:
    """A lean adult without diabetes and with fasting insulin > 150 pmol/L: sir-suspected fires."""
    return bundle(
        obs(FASTING_INSULIN, insulin_uiu, "uIU/mL", 20),
        obs(BMI, bmi, "kg/m2", 20),
        pt=patient(age),
    )


@pytest.fixture(scope="session")
def engine() -> Engine:
    """One real engine over the shipped rulesets and value sets, shared by the whole session.

    ``CDS_RULESETS`` (the variable ``cds evaluate`` honours) points it at another rulesets folder.
    """
    folder = os.environ.get("CDS_RULESETS")
    return Engine.load(Path(folder) if folder else None)


@pytest.fixture
def evaluate(engine: Engine):
    """``evaluate(payload, hook=None)`` at NOW, returning the Evaluation."""

    def run(payload: dict[str, Any], hook: str | None = None):
        return engine.evaluate(payload, hook=hook, now=NOW)

    return run


@pytest.fixture
def facts(evaluate):
    """``facts(*resources, pt=None, hook=None)``: the PatientFacts of a bundle of ``resources``."""

    def run(*resources: dict[str, Any], pt: dict[str, Any] | None = None, hook: str | None = None):
        return evaluate(bundle(*resources, pt=pt), hook=hook).facts

    return run


# --- shared by the v3 lab tests (three states: a value, a bound, could not be read) ---------------------

def text_obs(loinc: str, text: str, days_ago: float = 30, **kw: Any) -> dict[str, Any]:
    """An Observation of ``loinc`` whose value is only text ("see report", "Positive")."""
    o = obs(loinc, None, None, days_ago, **kw)
    o["valueString"] = text
    return o


def bound_obs(loinc: str, comparator: str, value: float, unit: str, days_ago: float = 30, **kw: Any) -> dict[str, Any]:
    """An Observation whose valueQuantity is a bound ("<15", ">90")."""
    o = obs(loinc, value, unit, days_ago, **kw)
    o["valueQuantity"]["comparator"] = comparator
    return o


def agree(engine: Engine, evaluation: Any) -> None:
    """The engine's matches and the Python explanation of every card agree (no ``disagrees``)."""
    from cds.authoring.explain import explain_evaluation

    explanation = explain_evaluation(engine, evaluation)
    bad = [f"{r.rule_id} card {c.index}: python {c.holds}, engine {c.matched_by_engine}"
           for r in explanation.rules if r.ran for c in r.cards if c.disagrees]
    assert bad == []
