"""Build :class:`PatientFacts` from a :class:`PatientRecord`: the one place facts are assembled.

Order matters and is fixed here: demographics, labs, coded items, derived values (BMI, TDD, ALT x
ULN, HIV-associated lipodystrophy), then the flat ``values`` dict the rule engine matches. The fact
vocabulary (:func:`fact_catalog`) is derived from the same value sets and lab definitions, so the rule
validator and the builder can never disagree about which names exist.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from cds.facts import growth_adapter
from cds.facts.coded import collect_coded, medication_concept
from cds.facts.insulin import compute_insulin_dose, concentration_u_per_ml
from cds.facts.labs import LabCatalog, select_labs
from cds.facts.dosage import medication_ended
from cds.facts.matching import ConceptMatcher, with_product_displays
from cds.facts.meds import (
    MEDICATION_FACT_SPECS,
    NEVER_RESOLVING,
    hiv_from_antiretrovirals,
    insulin_pump_evidence,
    medication_facts,
    u500_dose_in_ml,
)
from cds.facts.models import FactSpec, FactValue, LabValue, PatientFacts, UnreadableValue
from cds.facts.pregnancy import find_pregnancy_observation
from cds.fhir.validation import resource_label
from cds.facts.special import find_nyha_class, find_receptor_antibody
from cds.fhir.dates import parse_fhir_datetime
from cds.fhir.ingest import PatientRecord

__all__ = ["bound_specs", "build_facts", "fact_catalog", "fact_key", "set_bound_values"]

ALT_DEFAULT_ULN = 40.0  # U/L; pathways.md 1: ALT ULN = referenceRange.high, else 40 U/L
HOOK_CHOICES = ("patient-view", "order-select", "order-sign")
SEX_CHOICES = ("female", "male", "other", "unknown")
_HIV_TEXT = re.compile(r"\bHIV\b|human immunodeficiency|antiretroviral|HAART", re.IGNORECASE)
LIPODYSTROPHY_SETS = ("lipodystrophy", "lipodystrophy-generalised", "lipodystrophy-partial")
U500_PEN_CODES = frozenset({"1731315", "1731317"})  # pathways.md 1: pen unless these codes or "pen" in name
_PEN_TEXT = re.compile(r"\bpen\b|kwikpen", re.IGNORECASE)


def fact_key(valueset_id: str, suffix: str) -> str:
    """Flat fact name for a value set family: ``heart-failure`` + ``history`` -> ``heart_failure_history``."""
    return f"{valueset_id.replace('-', '_')}_{suffix}"


def fact_catalog(valuesets: dict[str, Any], labs: LabCatalog) -> dict[str, FactSpec]:
    """Every fact name rules may use, with type, unit and meaning."""
    specs: list[FactSpec] = [
        FactSpec(name="hook", type="string", choices=HOOK_CHOICES, description="the CDS hook being evaluated"),
        FactSpec(name="age", type="number", unit="a", description="age in years at the evaluation time"),
        FactSpec(name="sex", type="string", choices=SEX_CHOICES, description="administrative sex (Patient.gender)"),
        FactSpec(name="bmi_z", type="number", description="BMI-for-age z-score (ages 2-17, shipped reference)"),
        FactSpec(name="insulin_tdd", type="number", unit="U/d", quantity=None,
                 description="insulin total daily dose over active insulins"),
        FactSpec(name="insulin_tdd_with_drafts", type="number", unit="U/d",
                 description="insulin TDD including drafted insulin orders"),
        FactSpec(name="insulin_u_per_kg", type="number", unit="U/kg/d",
                 description="insulin TDD per kg of the latest weight"),
        FactSpec(name="insulin_tdd_at_least", type="number", unit="U/d",
                 description="insulin TDD lower bound: the quantified sum (equals insulin_tdd when complete); "
                             "decides 'TDD > T', never 'TDD <= T'"),
        FactSpec(name="insulin_u_per_kg_at_least", type="number", unit="U/kg/d",
                 description="lower bound of insulin U/kg/day (insulin_tdd_at_least per kg of the latest weight)"),
        FactSpec(name="insulin_tdd_unreadable", type="bool",
                 description="an active insulin dosage could not be quantified (TDD incomplete or unknown)"),
        FactSpec(name="insulin_u500_dose_in_ml", type="bool",
                 description="an active or drafted U-500 dose written in mL or syringe markings rather than units"),
        FactSpec(name="insulin_pump", type="bool",
                 description="insulin pump use: a basal rate on a non-IV route, pump/CSII text, "
                             "or an active insulin pump device"),
        FactSpec(name="insulin_u500_pump", type="bool",
                 description="an active or drafted U-500 product with insulin pump use"),
        *MEDICATION_FACT_SPECS,
        FactSpec(name="alt_x_uln", type="number", description="latest recent ALT as a multiple of its ULN"),
        *bound_specs("alt_x_uln", "ALT as a multiple of its ULN", None, None),
        FactSpec(name="pregnancy_observation", type="bool",
                 description="pregnant by the latest pregnancy-status Observation (10 months) or a positive hCG (12 weeks)"),
        FactSpec(name="pregnancy_observation_unreadable", type="bool",
                 description="a recent pregnancy-status or hCG Observation whose value could not be read"),
        FactSpec(name="alt_last_x_uln", type="number", description="latest ALT ever as a multiple of its ULN"),
        FactSpec(name="nyha_class", type="number", description="latest NYHA class (1-4) in 12 months"),
        FactSpec(name="insulin_receptor_antibody_positive", type="bool",
                 description="a positive anti-insulin-receptor antibody result (never insulin antibodies)"),
        FactSpec(name="lipodystrophy_hiv", type="bool",
                 description="an HIV-associated lipodystrophy (text says HIV, or lipodystrophy with active HIV)"),
        FactSpec(name="insulin_u500_vial", type="bool",
                 description="an active or drafted U-500 product that is a vial (not a pen)"),
        FactSpec(name="insulin_other_than_u500_active", type="bool",
                 description="an active insulin that is not a U-500 product"),
    ]
    for name, definition in labs.definitions.items():
        specs.append(FactSpec(name=name, type="number", unit=definition.unit, quantity=definition.quantity,
                              description=f"{definition.title}: latest within {definition.lookback_months or 'any'} months"))
        specs += bound_specs(name, definition.title, definition.unit, definition.quantity)
        specs.append(FactSpec(name=f"{name}_last", type="number", unit=definition.unit, quantity=definition.quantity,
                              description=f"{definition.title}: latest value at any date (may be stale)"))
        specs.append(FactSpec(name=f"{name}_last_days", type="number", unit="d",
                              description=f"{definition.title}: age in days of the latest value"))
    for vs_id, vs in valuesets.items():
        if vs.kind == "condition":
            specs += [
                FactSpec(name=fact_key(vs_id, "active"), type="bool", description=f"active {vs.title}"),
                FactSpec(name=fact_key(vs_id, "history"), type="bool", description=f"{vs.title}, any clinical status"),
                FactSpec(name=fact_key(vs_id, "days"), type="number", unit="d",
                         description=f"days since the latest {vs.title} record (any status)"),
                FactSpec(name=fact_key(vs_id, "active_days"), type="number", unit="d",
                         description=f"days since the latest active {vs.title} record"),
            ]
        elif vs.kind == "medication":
            specs += [
                FactSpec(name=fact_key(vs_id, "active"), type="bool", description=f"{vs.title}: active medication"),
                FactSpec(name=fact_key(vs_id, "drafted"), type="bool", description=f"{vs.title}: drafted order"),
                FactSpec(name=fact_key(vs_id, "any"), type="bool",
                         description=f"{vs.title}: recorded with any status but entered-in-error"),
                FactSpec(name=fact_key(vs_id, "days"), type="number", unit="d",
                         description=f"{vs.title}: days since the latest record"),
                FactSpec(name=fact_key(vs_id, "allergy"), type="bool", description=f"allergy to {vs.title}"),
            ]
        elif vs.kind == "procedure":
            specs += [
                FactSpec(name=fact_key(vs_id, "active"), type="bool",
                         description=f"{vs.title}: an active or completed request"),
                FactSpec(name=fact_key(vs_id, "days"), type="number", unit="d",
                         description=f"{vs.title}: days since the latest active/completed request"),
            ]
        elif vs.kind == "device":
            specs += [
                FactSpec(name=fact_key(vs_id, "active"), type="bool",
                         description=f"{vs.title}: an active or drafted order"),
            ]
    catalog = {spec.name: spec for spec in specs}
    for spec in list(catalog.values()):
        if spec.type == "number":
            catalog[f"{spec.name}_known"] = FactSpec(
                name=f"{spec.name}_known", type="bool", description=f"whether {spec.name} is known"
            )
    return catalog


def bound_specs(name: str, title: str, unit: str | None, quantity: str | None) -> list[FactSpec]:
    """The three-state companions of a lab fact (pathways.md 1, Three states and Comparators).

    ``<name>_low`` / ``<name>_high`` (and their ``_inclusive`` flags) bound the recent value: a point
    has low = high; "<15" only an exclusive high; ">90" only an exclusive low. The condition compiler
    decides ``<name> < T`` from them (true when every allowed value is below T, false when none is,
    unknown otherwise). ``<name>_unreadable``: the newest record in the look-back could not be read.
    ``<name>_recorded``: the look-back holds a record of it, readable or not (absent = not recorded).
    """
    return [
        FactSpec(name=f"{name}_low", type="number", unit=unit, quantity=quantity,
                 description=f"{title}: lowest value the recent result allows (value, or the bound of '>x')"),
        FactSpec(name=f"{name}_high", type="number", unit=unit, quantity=quantity,
                 description=f"{title}: highest value the recent result allows (value, or the bound of '<x')"),
        FactSpec(name=f"{name}_low_inclusive", type="bool", description=f"{title}: the low bound itself is allowed"),
        FactSpec(name=f"{name}_high_inclusive", type="bool", description=f"{title}: the high bound itself is allowed"),
        FactSpec(name=f"{name}_unreadable", type="bool",
                 description=f"{title}: the newest record in the look-back could not be read"),
        FactSpec(name=f"{name}_recorded", type="bool",
                 description=f"{title}: a record in the look-back (a value, a bound or unreadable)"),
    ]


def set_bound_values(values: dict[str, FactValue], name: str, lab: LabValue | None, unreadable: bool,
                     scale: float = 1.0) -> None:
    """Flat facts of one bounded lab: ``name`` for a point, ``_low``/``_high``/flags, ``_unreadable``."""
    values[f"{name}_unreadable"] = unreadable
    values[f"{name}_recorded"] = unreadable or lab is not None
    if lab is None:
        return
    if not lab.is_bound:
        values[name] = round(lab.value / scale, 6)
    if lab.low is not None:
        values[f"{name}_low"] = round(lab.low / scale, 6)
        values[f"{name}_low_inclusive"] = lab.low_inclusive
    if lab.high is not None:
        values[f"{name}_high"] = round(lab.high / scale, 6)
        values[f"{name}_high_inclusive"] = lab.high_inclusive


def _age_years(birth: datetime, now: datetime) -> float:
    years = now.year - birth.year - ((now.month, now.day) < (birth.month, birth.day))
    anniversary_year = birth.year + years
    try:
        anniversary = birth.replace(year=anniversary_year)
    except ValueError:  # 29 February
        anniversary = birth.replace(year=anniversary_year, day=28)
    return years + max((now - anniversary).days, 0) / 366.0


def _demographics(facts: PatientFacts, patient: dict[str, Any] | None, now: datetime) -> None:
    if patient is None:
        facts.notes.append("no Patient resource: age and sex unknown, age-dependent rules cannot fire")
        return
    gender = patient.get("gender")
    facts.sex = gender if gender in SEX_CHOICES else "unknown"
    birth = parse_fhir_datetime(patient.get("birthDate"))
    if birth is not None and birth <= now:
        facts.age_years = _age_years(birth, now)
    else:
        facts.notes.append("Patient.birthDate missing or after the evaluation time: age unknown")
    if patient.get("deceasedBoolean") is True:
        facts.deceased = True
    deceased_at = parse_fhir_datetime(patient.get("deceasedDateTime"))
    if deceased_at is not None and deceased_at <= now:
        facts.deceased = True


def _bmi(facts: PatientFacts) -> LabValue | None:
    measured = facts.labs.get("bmi")
    if measured is not None:
        facts.bmi_source = f"measured ({measured.resource})"
        return measured
    weight, height = facts.labs.get("weight"), facts.labs.get("height")
    if weight is not None and height is not None and not weight.is_bound and not height.is_bound and height.value > 0:
        value = weight.value / (height.value**2)
        facts.bmi_source = f"computed from weight {weight.resource} and height {height.resource}"
        computed = LabValue(
            name="bmi",
            value=round(value, 2),
            unit="kg/m2",
            original=f"weight {weight.describe()} / height {height.describe()}^2",
            date=weight.date,
            resource=weight.resource,
        )
        facts.labs["bmi"] = computed
        return computed
    return None


def build_facts(
    record: PatientRecord,
    *,
    valuesets: dict[str, Any],
    labs: LabCatalog,
    catalog: dict[str, FactSpec],
    now: datetime,
    matcher: ConceptMatcher | None = None,
) -> PatientFacts:
    """Normalise one patient's record into facts (pathways.md section 1)."""
    facts = PatientFacts(patient_id=record.patient_id, hook=record.hook, now=now, notes=list(record.notes))
    _demographics(facts, record.patient, now)
    values: dict[str, FactValue] = {"hook": record.hook, "sex": facts.sex}
    if facts.age_years is not None:
        values["age"] = round(facts.age_years, 4)

    recent, last, ignored, unreadable = select_labs(record, labs, now)
    facts.labs, facts.last_labs, facts.ignored = recent, last, ignored
    facts.unreadable.update(unreadable)
    bmi = _bmi(facts)
    for name in labs.definitions:
        set_bound_values(values, name, facts.labs.get(name), name in facts.unreadable)
    for name, value in facts.last_labs.items():
        if not value.is_bound:
            values[f"{name}_last"] = value.value
        values[f"{name}_last_days"] = (now - value.date).days
    if bmi is not None and not bmi.is_bound and facts.age_years is not None and 2 <= facts.age_years < 18:
        z = growth_adapter.bmi_z(bmi=bmi.value, age_years=facts.age_years, sex=facts.sex)
        if z is None:
            facts.notes.append(
                f"child aged {facts.age_years:.1f}: no BMI-for-age reference for sex {facts.sex!r}; "
                "BMI-dependent rules are not evaluated"
            )
        else:
            facts.bmi_z = round(z, 3)
            values["bmi_z"] = facts.bmi_z

    alt = facts.labs.get("alt")
    uln = alt.reference_high if alt is not None and alt.reference_high and alt.reference_high > 0 else ALT_DEFAULT_ULN
    set_bound_values(values, "alt_x_uln", alt, "alt" in facts.unreadable, scale=uln)
    if "alt_x_uln" in values:
        values["alt_x_uln"] = round(float(values["alt_x_uln"]), 4)
    alt_last = facts.last_labs.get("alt")
    if alt_last is not None and not alt_last.is_bound:
        uln = alt_last.reference_high if alt_last.reference_high and alt_last.reference_high > 0 else ALT_DEFAULT_ULN
        values["alt_last_x_uln"] = round(alt_last.value / uln, 4)

    matcher = matcher or ConceptMatcher(valuesets)
    coded = collect_coded(record, matcher, now)
    facts.notes += [note for note in record.notes if note not in facts.notes]  # notes added while matching
    facts.conditions, facts.medications = coded.conditions, coded.medications
    facts.allergies, facts.procedures, facts.devices = coded.allergies, coded.procedures, coded.devices
    facts.draft_ids, facts.active_request_ids = coded.draft_ids, coded.active_request_ids

    # HIV (pathways.md 1): any HIV condition whatever its clinical status (HIV does not resolve), or an
    # active antiretroviral regimen (inferred items are added to the "hiv" condition list, so every
    # rule that asks about HIV sees the same answer and the card can name the regimen).
    hiv_items = coded.conditions.setdefault("hiv", [])
    hiv_items += hiv_from_antiretrovirals(coded)
    if not hiv_items:
        del coded.conditions["hiv"]
    hiv = bool(hiv_items)
    # HIV-associated lipodystrophy (pathways.md 1, v3): text says HIV, or any lipodystrophy (generalised,
    # partial or unspecified) in a patient with HIV as defined above. Not SIR-spectrum, in every rule.
    hiv_ld = [
        item
        for vs in LIPODYSTROPHY_SETS
        for item in coded.conditions.get(vs, [])
        if _HIV_TEXT.search(item.display) or hiv
    ]
    hiv_ld_resources = {item.resource for item in hiv_ld}
    values["lipodystrophy_hiv"] = bool(hiv_ld)
    if hiv_ld:
        facts.conditions["lipodystrophy-hiv"] = hiv_ld
    for vs in LIPODYSTROPHY_SETS:
        if vs in coded.conditions:
            kept = [i for i in coded.conditions[vs] if i.resource not in hiv_ld_resources]
            coded.conditions[vs] = kept
            facts.conditions[vs] = kept

    for vs_id, vs in valuesets.items():
        if vs.kind == "condition":
            items = coded.conditions.get(vs_id, [])
            active = [i for i in items if i.status in ("active", "recurrence", "relapse", "active (no clinicalStatus)")]
            if vs_id in NEVER_RESOLVING:
                active = items  # pathways.md 1: inactive, remission and resolved HIV records count
            values[fact_key(vs_id, "active")] = bool(active)
            values[fact_key(vs_id, "history")] = bool(items)
            _set_days(values, fact_key(vs_id, "days"), [i.date for i in items], now)
            _set_days(values, fact_key(vs_id, "active_days"), [i.date for i in active], now)
        elif vs.kind == "medication":
            items = coded.medications.get(vs_id, [])
            # pathways.md 1: MedicationRequest active or on-hold; MedicationStatement active only
            values[fact_key(vs_id, "active")] = any(
                not i.drafted
                and i.ended is None  # every period ended: recorded, not current (pathways.md 1)
                and (i.status == "active" or (i.status == "on-hold" and i.resource.startswith("MedicationRequest/")))
                for i in items
            )
            values[fact_key(vs_id, "drafted")] = any(i.drafted for i in items)
            values[fact_key(vs_id, "any")] = any(not i.drafted for i in items)
            _set_days(values, fact_key(vs_id, "days"), [i.date for i in items if not i.drafted], now)
            values[fact_key(vs_id, "allergy")] = bool(coded.allergies.get(vs_id))
        elif vs.kind == "procedure":
            items = coded.procedures.get(vs_id, [])
            values[fact_key(vs_id, "active")] = bool(items)
            _set_days(values, fact_key(vs_id, "days"), [i.date for i in items], now)
        elif vs.kind == "device":
            values[fact_key(vs_id, "active")] = bool(coded.devices.get(vs_id))

    nyha = find_nyha_class(record, now)
    if nyha is not None:
        values["nyha_class"], nyha_item = nyha
        facts.conditions["nyha"] = [nyha_item]
    pregnancy = find_pregnancy_observation(record, valuesets, now)
    values["pregnancy_observation"] = pregnancy.pregnant
    values["pregnancy_observation_unreadable"] = pregnancy.unreadable is not None
    if pregnancy.item is not None:
        facts.conditions["pregnancy-observation"] = [pregnancy.item]
        # shown with the pregnancy conditions in every card ({{ conditions.pregnancy }}); the flat
        # pregnancy_* condition facts were computed above and are not changed by this
        facts.conditions["pregnancy"] = [*facts.conditions.get("pregnancy", []), pregnancy.item]
    if pregnancy.unreadable is not None:
        facts.unreadable["pregnancy_observation"] = pregnancy.unreadable
    facts.notes += pregnancy.notes
    antibody = find_receptor_antibody(record, matcher, now)
    values["insulin_receptor_antibody_positive"] = antibody is not None
    if antibody is not None:
        facts.conditions["insulin-receptor-antibody-result"] = [antibody]

    _insulin_facts(facts, record, coded, values, matcher, now)
    medication_facts(facts, record, coded, values, matcher, now)

    for name, spec in catalog.items():
        if spec.type == "bool" and name not in values and not name.endswith("_known"):
            values[name] = False
    for name, spec in catalog.items():
        if spec.type == "number":
            values[f"{name}_known"] = name in values
    facts.values = values
    return facts


def _insulin_facts(
    facts: PatientFacts, record: PatientRecord, coded: Any, values: dict[str, FactValue], matcher: ConceptMatcher, now: datetime
) -> None:
    u500_items = coded.medication_resources.get("insulin-u500", [])
    u500_resources = {id(r) for r, _kind in u500_items}
    # a U-500 product usually sits in both value sets: each resource is considered once (by identity)
    unique = {id(r): (r, kind) for r, kind in coded.medication_resources.get("insulin", []) + u500_items}
    active: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    drafted: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    other_active = False
    for resource, kind in unique.values():
        concept = medication_concept(record, resource)
        if isinstance(concept, dict):
            concept = with_product_displays(concept, matcher.products)  # names the concentration
        if id(resource) in u500_resources and concentration_u_per_ml(concept) is None:
            # a U-500 product known by code alone (e.g. branded 1731317): its concentration is 500 U/mL
            concept = {**(concept or {}), "coding": [*((concept or {}).get("coding") or []), {"display": "U-500"}]}
        if kind == "drafted":
            drafted.append((resource, concept))
        elif _is_active(resource) and medication_ended(resource, now) is None:
            active.append((resource, concept))
            if id(resource) not in u500_resources:
                other_active = True
    weight = facts.labs.get("weight") or facts.last_labs.get("weight")
    dose = compute_insulin_dose(active, drafted, weight, now)
    facts.insulin = dose
    if dose.tdd is not None:
        values["insulin_tdd"] = round(dose.tdd, 2)
    if dose.tdd_at_least is not None:
        values["insulin_tdd_at_least"] = round(dose.tdd_at_least, 2)
    if dose.tdd_with_drafts is not None:
        values["insulin_tdd_with_drafts"] = round(dose.tdd_with_drafts, 2)
    if dose.per_kg is not None:
        values["insulin_u_per_kg"] = round(dose.per_kg, 3)
    if dose.per_kg_at_least is not None:
        values["insulin_u_per_kg_at_least"] = round(dose.per_kg_at_least, 3)
    if not dose.complete:
        values["insulin_tdd_unreadable"] = True
        facts.unreadable["insulin_tdd"] = UnreadableValue(
            fact="insulin_tdd",
            resource=dose.unknown_reasons[0].split(":", 1)[0] if dose.unknown_reasons else "insulin orders",
            raw="; ".join(r.split(": ", 1)[-1] for r in dose.unknown_reasons)[:200] or "dosage",
            reason="an active insulin dosage could not be quantified",
            title="insulin total daily dose",
        )
    values["insulin_other_than_u500_active"] = other_active
    vial = False
    u500_ml = False
    u500_labels: set[str] = set()
    for resource, kind in u500_items:
        if kind != "drafted" and (not _is_active(resource) or medication_ended(resource, now) is not None):
            continue
        u500_labels.add(resource_label(resource))
        concept = medication_concept(record, resource) or {}
        codes = {c.get("code") for c in concept.get("coding") or [] if isinstance(c, dict)}
        names = " ".join(
            [str(concept.get("text") or "")]
            + [str(c.get("display") or "") for c in concept.get("coding") or [] if isinstance(c, dict)]
        )
        if not (codes & U500_PEN_CODES) and not _PEN_TEXT.search(names):
            vial = True
        if u500_dose_in_ml(resource):
            u500_ml = True
    values["insulin_u500_vial"] = vial
    values["insulin_u500_dose_in_ml"] = u500_ml or bool(u500_labels & set(dose.ml_dose_resources))
    pump = insulin_pump_evidence(record, coded, [r for r, _c in active] + [r for r, _c in drafted], dose.pump_resources, matcher)
    values["insulin_pump"] = bool(pump)
    if pump:
        facts.devices["insulin-pump"] = pump
    # U-500 with any insulin pump in use: the pump may carry the U-500 (safer reading, pathways.md 2)
    values["insulin_u500_pump"] = bool(u500_labels) and bool(pump)


def _set_days(values: dict[str, FactValue], key: str, dates: list[datetime | None], now: datetime) -> None:
    """Days since the latest of ``dates``; left unknown when there is none or when one is undated.

    An undated record may be recent, so "within N months" must not rule it out: the condition
    compiler treats unknown days as inside any window (an undated active pregnancy still counts).
    """
    if dates and all(d is not None for d in dates):
        values[key] = (now - max(d for d in dates if d is not None)).days


def _is_active(resource: dict[str, Any]) -> bool:
    status = resource.get("status")
    if resource.get("resourceType") == "MedicationRequest":
        return status in ("active", "on-hold")
    return status == "active"
