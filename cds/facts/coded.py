"""Coded facts: conditions, medications, allergies, referrals and device orders, by value set.

Every value set of kind condition / medication / procedure / device yields the same family of facts,
so a new value set in ``rulesets/valuesets/`` becomes usable by rules without Python changes. Status
semantics follow pathways.md section 1:

* Condition: verificationStatus refuted / entered-in-error never counts. "active" = clinicalStatus
  active, recurrence or relapse, or absent. "history" = any clinical status (resolved, inactive...).
* MedicationRequest active or on-hold, MedicationStatement active = "active" (a MedicationAdministration
  only ever counts as "any", with its date, e.g. rituximab given in 24 months); draft requests in
  ``context.draftOrders`` = "drafted"; "any" = every status but entered-in-error.
* AllergyIntolerance: not refuted / entered-in-error, clinicalStatus active or absent.
* ServiceRequest: active or completed. DeviceRequest / SupplyRequest: active or drafted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cds.facts.dosage import json_object, medication_ended
from cds.facts.matching import ConceptMatcher
from cds.facts.models import CodedItem
from cds.fhir.dates import parse_fhir_datetime
from cds.fhir.ingest import PatientRecord, wellformed_concept
from cds.fhir.validation import resource_label

__all__ = ["CodedFacts", "collect_coded", "concept_display", "medication_concept", "medication_ingredients"]

ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
ACTIVE_REQUEST = frozenset({"active", "on-hold"})


def _code_of(element: Any) -> str | None:
    if isinstance(element, dict):
        for coding in element.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                return str(coding["code"])
    return None


def concept_display(concept: dict[str, Any] | None) -> str:
    if not isinstance(concept, dict):
        return "(no code)"
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return "(no code)"


def medication_concept(record: PatientRecord, resource: dict[str, Any]) -> dict[str, Any] | None:
    """The drug's CodeableConcept: inline, or from the contained/bundled Medication it references."""
    concept = resource.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        return concept
    if concept is not None:
        record.validate(resource)  # raises: the drug cannot be read, so the resource is named
    medication = record.resolve_medication(resource)
    if medication is not None:
        code = medication.get("code")
        return code if isinstance(code, dict) else None
    return None


def _resolve(record: PatientRecord, ref: Any, containers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A Medication by reference: contained in one of ``containers`` (``#id``) or in the request."""
    if not isinstance(ref, str):
        return None
    if ref.startswith("#"):
        for container in containers:
            for contained in container.get("contained") or []:
                if (isinstance(contained, dict) and contained.get("id") == ref[1:]
                        and contained.get("resourceType") == "Medication"):
                    return contained
        return None
    return record.medications_by_ref.get(ref)


def medication_ingredients(record: PatientRecord, resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Ingredient concepts of the referenced / contained Medication (pathways.md 1, identity route 1):
    ``Medication.ingredient[].itemCodeableConcept``, and for an ``itemReference`` the referenced
    Medication's code and its own ingredients (one level: a product of products)."""
    if isinstance(resource.get("medicationCodeableConcept"), dict):
        return []
    medication = record.resolve_medication(resource)
    if not isinstance(medication, dict):
        return []
    found: list[dict[str, Any]] = []

    def walk(med: dict[str, Any], depth: int) -> None:
        for ingredient in med.get("ingredient") or []:
            if not isinstance(ingredient, dict):
                continue
            item = ingredient.get("itemCodeableConcept")
            if item is not None and not wellformed_concept(item):
                record.validate(med)  # raises, naming the Medication whose ingredient cannot be read
            if isinstance(item, dict):
                found.append(item)
                continue
            reference = ingredient.get("itemReference")
            target = _resolve(record, (reference or {}).get("reference") if isinstance(reference, dict) else None,
                              [resource, med])
            if target is not None:
                if isinstance(target.get("code"), dict):
                    found.append(target["code"])
                if depth < 1:
                    walk(target, depth + 1)

    walk(medication, 0)
    return found


def _ingredient_names(concepts: list[dict[str, Any]]) -> str:
    names = [concept_display(c) for c in concepts]
    return ", ".join(n for n in names if n != "(no code)")


class CodedFacts:
    """Matched items per kind and value set, plus the flat facts derived from them."""

    def __init__(self) -> None:
        self.conditions: dict[str, list[CodedItem]] = {}
        self.medications: dict[str, list[CodedItem]] = {}
        self.allergies: dict[str, list[CodedItem]] = {}
        self.procedures: dict[str, list[CodedItem]] = {}
        self.devices: dict[str, list[CodedItem]] = {}
        self.draft_ids: dict[str, list[str]] = {}
        self.active_request_ids: dict[str, list[str]] = {}
        # raw resources of active insulin etc., for dose computation: value set -> [(resource, kind)]
        self.medication_resources: dict[str, list[tuple[dict[str, Any], str]]] = {}




def _condition_date(resource: dict[str, Any]) -> datetime | None:
    period = json_object(resource.get("onsetPeriod"))
    for raw in (resource.get("recordedDate"), resource.get("onsetDateTime"), period.get("start")):
        parsed = parse_fhir_datetime(raw)
        if parsed is not None:
            return parsed
    return None


def _status(element: Any) -> str | None:
    return _code_of(element)


def _readable(record: PatientRecord, resource: dict[str, Any], concept: Any) -> None:
    """A coded resource whose concept cannot be read is validated now, so the error names it."""
    if not wellformed_concept(concept):
        record.validate(resource)


def collect_coded(record: PatientRecord, matcher: ConceptMatcher, now: datetime) -> CodedFacts:
    """Match every relevant resource against the value sets of its kind (validating what matches)."""
    facts = CodedFacts()

    for resource in record.of_type("Condition"):
        concept = resource.get("code")
        _readable(record, resource, concept)
        hits = matcher.match("condition", concept)
        if not hits:
            continue
        record.validate(resource)
        if _status(resource.get("verificationStatus")) in EXCLUDED_VERIFICATION:
            continue
        when = _condition_date(resource)
        if when is not None and when > now:
            continue  # recorded after the evaluation time: it did not exist yet
        clinical = _status(resource.get("clinicalStatus")) or "active (no clinicalStatus)"
        for vs_id in hits:
            facts.conditions.setdefault(vs_id, []).append(
                CodedItem(
                    valueset=vs_id,
                    resource=resource_label(resource),
                    display=concept_display(concept),
                    status=clinical,
                    date=when,
                )
            )

    def add_medication(resource: dict[str, Any], kind: str) -> None:
        concept = medication_concept(record, resource)
        _readable(record, resource, concept)
        ingredients = medication_ingredients(record, resource)
        for ingredient in ingredients:
            _readable(record, resource, ingredient)
        hits = matcher.match_medication(concept, ingredients)
        device_hits = matcher.match("device", concept) if kind == "drafted" or resource.get(
            "resourceType"
        ) == "MedicationRequest" else []
        if not hits and not device_hits:
            return
        record.validate(resource)
        when = parse_fhir_datetime(
            resource.get("authoredOn")
            or resource.get("dateAsserted")
            or resource.get("effectiveDateTime")
            or (resource.get("effectivePeriod") or {}).get("start")
        )
        if kind != "drafted" and when is not None and when > now:
            return
        status = resource.get("status") or "unknown"
        if status == "entered-in-error" or (resource.get("resourceType") == "MedicationAdministration" and status == "not-done"):
            return
        label = resource_label(resource)
        display = concept_display(concept)
        if ingredients:
            display = f"{display} (ingredients: {_ingredient_names(ingredients)})"
        ended = None if kind == "drafted" else medication_ended(resource, now)
        for vs_id in hits:
            item = CodedItem(
                valueset=vs_id,
                resource=label,
                display=display,
                status="drafted" if kind == "drafted" else status,
                date=when,
                drafted=kind == "drafted",
                ended=ended,
            )
            facts.medications.setdefault(vs_id, []).append(item)
            facts.medication_resources.setdefault(vs_id, []).append((resource, kind))
            if kind == "drafted":
                facts.draft_ids.setdefault(vs_id, []).append(label)
            elif resource.get("resourceType") == "MedicationRequest" and status in ACTIVE_REQUEST and ended is None:
                facts.active_request_ids.setdefault(vs_id, []).append(label)
        for vs_id in device_hits:
            _add_device(facts, vs_id, resource, concept, kind, when)

    for resource in record.of_type("MedicationRequest"):
        add_medication(resource, "record")
    for resource in record.of_type("MedicationStatement"):
        add_medication(resource, "record")
    for resource in record.of_type("MedicationAdministration"):
        add_medication(resource, "record")  # e.g. rituximab infusions: "given in 24 months", never "active"
    for resource in record.draft_orders:
        if resource.get("resourceType") == "MedicationRequest":
            if resource.get("status") == "draft":
                add_medication(resource, "drafted")
            else:
                record.notes.append(
                    f"{resource_label(resource)} in draftOrders has status "
                    f"{resource.get('status')!r}, not draft: ignored as an order"
                )

    for resource in record.of_type("AllergyIntolerance"):
        concept = resource.get("code")
        _readable(record, resource, concept)
        hits = matcher.match("medication", concept)
        if not hits:
            continue
        record.validate(resource)
        if _status(resource.get("verificationStatus")) in EXCLUDED_VERIFICATION:
            continue
        allergy_clinical = _status(resource.get("clinicalStatus"))
        if allergy_clinical not in (None, "active"):
            continue
        for vs_id in hits:
            facts.allergies.setdefault(vs_id, []).append(
                CodedItem(
                    valueset=vs_id,
                    resource=resource_label(resource),
                    display=concept_display(concept),
                    status=allergy_clinical or "active (no clinicalStatus)",
                    date=parse_fhir_datetime(resource.get("recordedDate")),
                )
            )

    for resource in record.of_type("ServiceRequest"):
        concept = resource.get("code")
        _readable(record, resource, concept)
        hits = matcher.match("procedure", concept)
        if not hits:
            continue
        record.validate(resource)
        status = resource.get("status")
        if status not in ("active", "completed"):
            continue
        when = parse_fhir_datetime(resource.get("authoredOn"))
        if when is not None and when > now:
            continue
        for vs_id in hits:
            facts.procedures.setdefault(vs_id, []).append(
                CodedItem(
                    valueset=vs_id,
                    resource=resource_label(resource),
                    display=concept_display(concept),
                    status=status,
                    date=when,
                )
            )

    device_sources = [(r, "record") for r in record.of_type("DeviceRequest")]
    device_sources += [(r, "record") for r in record.of_type("SupplyRequest")]
    device_sources += [
        (r, "drafted")
        for r in record.draft_orders
        if r.get("resourceType") in ("DeviceRequest", "SupplyRequest")
    ]
    for resource, kind in device_sources:
        concept = resource.get("codeCodeableConcept") or resource.get("itemCodeableConcept")
        _readable(record, resource, concept)
        hits = matcher.match("device", concept)
        if not hits:
            continue
        record.validate(resource)
        for vs_id in hits:
            _add_device(facts, vs_id, resource, concept, kind, parse_fhir_datetime(resource.get("authoredOn")))
    return facts


def _add_device(
    facts: CodedFacts,
    vs_id: str,
    resource: dict[str, Any],
    concept: dict[str, Any] | None,
    kind: str,
    when: datetime | None,
) -> None:
    status = resource.get("status") or "unknown"
    drafted = kind == "drafted" or status == "draft"
    if not drafted and status != "active":
        return
    facts.devices.setdefault(vs_id, []).append(
        CodedItem(
            valueset=vs_id,
            resource=resource_label(resource),
            display=concept_display(concept),
            status="drafted" if drafted else status,
            date=when,
            drafted=drafted,
        )
    )
