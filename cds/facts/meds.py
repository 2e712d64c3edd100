"""Medication facts beyond a value-set lookup (pathways.md 1, catalogue v3).

* HIV inferred from an active antiretroviral regimen, and HIV as a condition that never resolves;
* physiological hydrocortisone replacement, which is not a secondary cause of insulin resistance;
* oral oestrogen (route or form: transdermal, vaginal and implant forms are not oral);
* metreleptin start date (hypoglycaemia after starting it);
* insulin pump use and U-500 doses written in mL or syringe markings (U-500 safety).

Each is computed from the matched items of :mod:`cds.facts.coded`, so the value sets stay data.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from cds.facts.dosage import dosages_of
from cds.facts.insulin import administrations_per_day
from cds.facts.matching import ConceptMatcher, with_product_displays
from cds.facts.models import CodedItem, FactSpec, FactValue, PatientFacts
from cds.fhir.dates import parse_fhir_datetime
from cds.fhir.validation import resource_label

__all__ = [
    "HYDROCORTISONE_REPLACEMENT_MAX_MG",
    "MEDICATION_FACT_SPECS",
    "NEVER_RESOLVING",
    "hiv_from_antiretrovirals",
    "hydrocortisone_mg_per_day",
    "insulin_pump_evidence",
    "medication_facts",
    "oral_route",
    "u500_dose_in_ml",
]

#: Condition value sets whose records count whatever their clinical status (pathways.md 1: HIV does
#: not resolve, so inactive, remission and resolved records count).
NEVER_RESOLVING = frozenset({"hiv"})

#: pathways.md 1: hydrocortisone <= 30 mg/day is physiological replacement [S: replacement is
#: 15-25 mg/day, Endocrine Society 2016 primary adrenal insufficiency guideline; 30 mg ceiling [M]].
HYDROCORTISONE_REPLACEMENT_MAX_MG = 30.0

MEDICATION_FACT_SPECS: tuple[FactSpec, ...] = (
    FactSpec(name="hiv", type="bool",
             description="HIV (pathways.md 1): an HIV condition of any clinical status but refuted/entered-in-error, "
                         "or an active antiretroviral regimen"),
    FactSpec(name="glucocorticoid_systemic_non_replacement", type="bool",
             description="an active systemic glucocorticoid other than physiological hydrocortisone replacement"),
    FactSpec(name="hydrocortisone_replacement", type="bool",
             description="active hydrocortisone <= 30 mg/day, or of unknown dose with adrenal insufficiency recorded"),
    FactSpec(name="oral_oestrogen_active", type="bool",
             description="an active oral oestrogen (route oral, tablet/capsule form, or route not stated)"),
    FactSpec(name="oral_oestrogen_drafted", type="bool",
             description="a drafted oral oestrogen order (route oral, tablet/capsule form, or route not stated)"),
    FactSpec(name="metreleptin_start_days", type="number", unit="d",
             description="days since the earliest start (authoredOn / effective start) of the active metreleptin; "
                         "unknown when a start is not recorded"),
)

# Routes and forms (pathways.md 1, oral oestrogen): transdermal, vaginal and implant forms excluded.
_NON_ORAL = re.compile(
    r"\b(transdermal|patch(es)?|gel|spray|vaginal|pessar(y|ies)|vaginal ring|ring|implant|subcutaneous|"
    r"intramuscular|injection|topical|cutaneous|cream|nasal)\b",
    re.IGNORECASE,
)
_ORAL = re.compile(r"\b(oral|by mouth|PO|tablets?|capsules?|tabs?)\b", re.IGNORECASE)
# SNOMED route codes: 26643006 Oral; 45890007 Transdermal; 16857009 Vaginal; 34206005 Subcutaneous;
# 78421000 Intramuscular; 6064005 Topical (HL7 FHIR R4 SNOMED CT Route Codes value set; codes from memory [M],
# unverified: route text and product names decide as well, so a wrong code cannot be the only evidence).
_ORAL_ROUTE_CODES = frozenset({"26643006"})
_NON_ORAL_ROUTE_CODES = frozenset({"45890007", "16857009", "34206005", "78421000", "6064005"})

_PUMP_TEXT = re.compile(r"\b(insulin )?pump\b|\bCSII\b|continuous subcutaneous", re.IGNORECASE)
_ML_TEXT = re.compile(r"\d\s*(ml|millilit(er|re)s?|cc)\b|\bmarkings?\b|\bmark\b|\btuberculin\b|\bU-?100 syringe", re.IGNORECASE)
_MG_UNITS = frozenset({"mg", "milligram", "milligrams"})
_TABLET_UNITS = frozenset({"tab", "tabs", "tablet", "tablets", "{tbl}", "{tablet}", "{tablets}", "1", "each", "{each}"})
_STRENGTH = re.compile(r"(\d+(?:\.\d+)?)\s*MG\b", re.IGNORECASE)


def _concept_words(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    words = [str(concept.get("text") or "")]
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict):
            words += [str(coding.get("display") or ""), str(coding.get("code") or "")]
    return [w for w in words if w]


def oral_route(resource: dict[str, Any], concept: Any, medication: dict[str, Any] | None) -> bool | None:
    """True oral (route oral or a tablet/capsule form), False non-oral, None not stated.

    The product's own name is checked as well ("Estradiol 50 micrograms/24 hours transdermal patch").
    """
    route_words: list[str] = []
    codes: set[str] = set()
    for dosage in dosages_of(resource):
        route = dosage.get("route")
        route_words += _concept_words(route)
        if isinstance(route, dict):
            codes |= {str(c.get("code")) for c in route.get("coding") or [] if isinstance(c, dict)}
        if isinstance(dosage.get("text"), str):
            route_words.append(dosage["text"])
    form_words = _concept_words((medication or {}).get("form")) + _concept_words(concept)
    if codes & _NON_ORAL_ROUTE_CODES or any(_NON_ORAL.search(w) for w in route_words + form_words):
        return False
    if codes & _ORAL_ROUTE_CODES or any(_ORAL.search(w) for w in route_words + form_words):
        return True
    return None


def hiv_from_antiretrovirals(coded: Any) -> list[CodedItem]:
    """HIV inferred from an active antiretroviral regimen (pathways.md 1, HIV (b))."""
    inferred = []
    for item in coded.medications.get("antiretroviral-hiv", []):
        if item.drafted or item.ended is not None:
            continue
        if item.status == "active" or (item.status == "on-hold" and item.resource.startswith("MedicationRequest/")):
            inferred.append(CodedItem(
                valueset="hiv",
                resource=item.resource,
                display=f"HIV inferred from antiretroviral therapy: {item.display}",
                status="active (antiretroviral therapy)",
                date=item.date,
            ))
    return inferred


def hydrocortisone_mg_per_day(resource: dict[str, Any], concept: Any, now: datetime) -> float | None:
    """Hydrocortisone mg/day of one order, or None when any current dosage cannot be quantified.

    Dose in mg, or in tablets x the product strength when the product names exactly one ("10 MG").
    """
    from cds.facts.dosage import dosage_ended  # local: keeps the module's import list short

    strengths = {float(m) for w in _concept_words(concept) for m in _STRENGTH.findall(w)}
    total = 0.0
    counted = 0
    for dosage in dosages_of(resource):
        if dosage.get("asNeededBoolean") is True or dosage_ended(dosage, resource, now) is not None:
            continue
        mg = None
        for dose_and_rate in dosage.get("doseAndRate") or []:
            quantity = dose_and_rate.get("doseQuantity") if isinstance(dose_and_rate, dict) else None
            if not isinstance(quantity, dict) or not isinstance(quantity.get("value"), (int, float)):
                continue
            unit = str(quantity.get("code") or quantity.get("unit") or "").strip().lower()
            if unit in _MG_UNITS:
                mg = float(quantity["value"])
            elif unit in _TABLET_UNITS and len(strengths) == 1:
                mg = float(quantity["value"]) * next(iter(strengths))
        per_day = administrations_per_day(dosage.get("timing"))
        if mg is None or per_day is None:
            return None
        total += mg * per_day
        counted += 1
    return total if counted else None


def u500_dose_in_ml(resource: dict[str, Any]) -> bool:
    """A U-500 dose written in mL or syringe markings rather than units (ISMP: order U-500 in units)."""
    for dosage in dosages_of(resource):
        in_units = False
        for dose_and_rate in dosage.get("doseAndRate") or []:
            quantity = dose_and_rate.get("doseQuantity") if isinstance(dose_and_rate, dict) else None
            if isinstance(quantity, dict):
                unit = str(quantity.get("code") or quantity.get("unit") or "").strip().lower()
                if unit in ("ml", "cc", "milliliter", "millilitre", "cm3") or "mark" in unit:
                    return True
                if unit in ("u", "[iu]", "iu", "unit", "units", "{units}", "[u]"):
                    in_units = True
        if not in_units and isinstance(dosage.get("text"), str) and _ML_TEXT.search(dosage["text"]):
            return True
    return False


def insulin_pump_evidence(
    record: Any, coded: Any, resources: list[dict[str, Any]], rate_labels: list[str], matcher: ConceptMatcher,
) -> list[CodedItem]:
    """Insulin pump use (pathways.md 1): a basal rate in units per time on a non-IV route, dosage or
    product text naming a pump / CSII / continuous subcutaneous infusion, or an active or drafted
    DeviceRequest / active Device naming an insulin pump."""
    evidence: list[CodedItem] = []
    for label in dict.fromkeys(rate_labels):
        evidence.append(CodedItem(valueset="insulin-pump", resource=label,
                                  display="insulin given as a basal rate (units per hour)", status="rate"))
    for resource in resources:
        texts = [d.get("text") for d in dosages_of(resource) if isinstance(d.get("text"), str)]
        concept = resource.get("medicationCodeableConcept")
        if not isinstance(concept, dict):
            medication = record.resolve_medication(resource)
            concept = medication.get("code") if isinstance(medication, dict) else None
        texts += _concept_words(concept)
        if any(_PUMP_TEXT.search(t) for t in texts if isinstance(t, str)):
            label = resource_label(resource)
            if all(e.resource != label for e in evidence):
                evidence.append(CodedItem(valueset="insulin-pump", resource=label,
                                          display="dosage or product text names an insulin pump", status="text"))
    evidence += coded.devices.get("insulin-pump", [])
    for device in record.of_type("Device"):
        if device.get("status") not in (None, "active"):
            continue
        names = [n.get("name") for n in device.get("deviceName") or [] if isinstance(n, dict)]
        concept = device.get("type") if isinstance(device.get("type"), dict) else {}
        text = " ".join(str(n) for n in names if n)
        probe = {**concept, "text": " ".join(filter(None, [str(concept.get("text") or ""), text])) or None}
        if "insulin-pump" in matcher.match("device", probe):
            evidence.append(CodedItem(valueset="insulin-pump", resource=resource_label(device),
                                      display=text or str(concept.get("text") or "insulin pump"),
                                      status=str(device.get("status") or "active (no status)")))
    return evidence


def _active(item: CodedItem) -> bool:
    return (not item.drafted and item.ended is None
            and (item.status == "active" or (item.status == "on-hold" and item.resource.startswith("MedicationRequest/"))))


def medication_facts(
    facts: PatientFacts, record: Any, coded: Any, values: dict[str, FactValue], matcher: ConceptMatcher, now: datetime,
) -> None:
    """Set the v3 medication facts (see the module docstring) on ``values`` and ``facts``."""
    from cds.facts.coded import medication_concept  # coded imports nothing from here: no circle

    by_label = {resource_label(r): (r, kind) for items in coded.medication_resources.values() for r, kind in items}
    values["hiv"] = bool(coded.conditions.get("hiv"))

    # --- hydrocortisone replacement (pathways.md 1) ---
    adrenal = bool(coded.conditions.get("adrenal-insufficiency"))
    replacement: list[CodedItem] = []
    for item in coded.medications.get("hydrocortisone", []):
        if not _active(item):
            continue
        resource, _kind = by_label.get(item.resource, (None, None))
        if resource is None:
            continue
        concept = medication_concept(record, resource)
        if isinstance(concept, dict):
            concept = with_product_displays(concept, matcher.products)  # the strength, e.g. "10 MG"
        mg = hydrocortisone_mg_per_day(resource, concept, now)
        if (mg is not None and mg <= HYDROCORTISONE_REPLACEMENT_MAX_MG) or (mg is None and adrenal):
            shown = f"{mg:g} mg/day" if mg is not None else "dose not stated, adrenal insufficiency recorded"
            replacement.append(item.model_copy(update={"display": f"{item.display} - physiological replacement ({shown})"}))
    replacement_labels = {i.resource for i in replacement}
    values["hydrocortisone_replacement"] = bool(replacement)
    if replacement:
        facts.medications["hydrocortisone"] = replacement + [
            i for i in coded.medications.get("hydrocortisone", []) if i.resource not in replacement_labels
        ]
    values["glucocorticoid_systemic_non_replacement"] = any(
        _active(i) and i.resource not in replacement_labels for i in coded.medications.get("glucocorticoid-systemic", [])
    )

    # --- oral oestrogen (pathways.md 1) ---
    kept: list[CodedItem] = []
    for item in coded.medications.get("oestrogen-oral", []):
        resource, _kind = by_label.get(item.resource, (None, None))
        if resource is None:
            continue
        oral = oral_route(resource, medication_concept(record, resource), record.resolve_medication(resource))
        if oral is False:
            continue
        kept.append(item if oral else item.model_copy(update={"display": f"{item.display} (route not stated: taken as oral)"}))
    if "oestrogen-oral" in coded.medications:
        facts.medications["oestrogen-oral"] = kept
        labels = {i.resource for i in kept}
        if "oestrogen-oral" in facts.draft_ids:
            facts.draft_ids["oestrogen-oral"] = [d for d in facts.draft_ids["oestrogen-oral"] if d in labels]
    values["oral_oestrogen_active"] = any(_active(i) for i in kept)
    values["oral_oestrogen_drafted"] = any(i.drafted for i in kept)

    # --- metreleptin start (pathways.md 2, hypoglycaemia-deescalation) ---
    starts: list[datetime | None] = []
    for item in coded.medications.get("metreleptin", []):
        if not _active(item):
            continue
        resource, _kind = by_label.get(item.resource, (None, None))
        if resource is None:
            continue
        period = resource.get("effectivePeriod") if isinstance(resource.get("effectivePeriod"), dict) else {}
        starts.append(parse_fhir_datetime(resource.get("authoredOn") or period.get("start") or resource.get("effectiveDateTime")))
    if starts and all(s is not None for s in starts):
        values["metreleptin_start_days"] = (now - min(s for s in starts if s is not None)).days
