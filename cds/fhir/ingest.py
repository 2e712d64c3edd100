"""Turn a CDS Hooks request or a FHIR Bundle into one patient's raw record.

This step only *collects and sorts* resources; it does not interpret them. Prefetch values are read by
their ``resourceType`` (a resource, or a Bundle of any type), never by their key name, because EHRs
and the CDS Hooks sandbox name keys as they like. Draft orders come from ``context.draftOrders``.
Resources about another patient are dropped here so one patient's facts can never leak into another's
cards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cds._exceptions import InvalidRequestError, NotJSONError
from cds.fhir.validation import resource_label, validate_resource

__all__ = ["HOOKS", "PatientRecord", "ingest", "parse_json", "wellformed_concept"]

HOOKS = ("patient-view", "order-select", "order-sign")

# Resource types the fact builders read. Everything else in a payload is ignored, never validated.
RELEVANT_TYPES = frozenset(
    {
        "Patient",
        "Observation",
        "Condition",
        "MedicationRequest",
        "MedicationStatement",
        "MedicationAdministration",
        "Medication",
        "AllergyIntolerance",
        "ServiceRequest",
        "DeviceRequest",
        "SupplyRequest",
        "Device",  # an insulin pump in use (pathways.md 1, insulin pump use)
    }
)

# The Patient elements the fact builders read (demographics.py): the only ones validated.
PATIENT_ELEMENTS_READ = frozenset({"resourceType", "id", "gender", "birthDate", "deceasedBoolean", "deceasedDateTime"})

# Elements of the other resources that no fact builder reads: left out of validation, so a real client
# that sends one in a shape R4 does not allow (the CDS Hooks sandbox sends MedicationRequest.category
# as one object, not a list) is still judged on what the rules use. A malformed element the facts do
# read is still named as invalid FHIR.
ELEMENTS_NOT_READ = frozenset({
    "text", "meta", "extension", "identifier", "note", "category", "requester", "recorder", "performer",
    "performerType", "encounter", "reasonCode", "reasonReference", "insurance", "supportingInformation",
    "courseOfTherapyType", "priority", "basedOn", "groupIdentifier", "instantiatesCanonical", "instantiatesUri",
    "substitution", "detectedIssue", "eventHistory", "reportedBoolean", "reportedReference", "informationSource",
    "derivedFrom", "partOf", "statusReason", "implicitRules", "language",
})


def elements_read(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` without the elements no fact builder reads (:data:`ELEMENTS_NOT_READ`), for validation."""
    if resource.get("resourceType") == "Patient":
        return {k: v for k, v in resource.items() if k in PATIENT_ELEMENTS_READ}
    return {k: v for k, v in resource.items() if k not in ELEMENTS_NOT_READ}


# Where each type points at its patient.
_SUBJECT_FIELD = {
    "Observation": "subject",
    "Condition": "subject",
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "MedicationAdministration": "subject",
    "AllergyIntolerance": "patient",
    "ServiceRequest": "subject",
    "DeviceRequest": "subject",
    "Device": "patient",
}


@dataclass
class PatientRecord:
    """One patient's raw resources, sorted by type, as the fact builders consume them."""

    hook: str
    patient_id: str | None
    patient: dict[str, Any] | None
    resources: dict[str, list[dict[str, Any]]]
    draft_orders: list[dict[str, Any]] = field(default_factory=list)
    selections: list[str] = field(default_factory=list)
    medications_by_ref: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source: str = "bundle"
    _validated: set[int] = field(default_factory=set, repr=False)

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return self.resources.get(resource_type, [])

    def validate(self, resource: dict[str, Any]) -> None:
        """Validate a resource once per evaluation, right before its values are read."""
        key = id(resource)
        if key not in self._validated:
            validate_resource(elements_read(resource))
            self._validated.add(key)

    def resolve_medication(self, owner: dict[str, Any]) -> dict[str, Any] | None:
        """The Medication a request/statement points at: contained (``#id``), bundled or by fullUrl."""
        reference = owner.get("medicationReference")
        if reference is not None and not isinstance(reference, dict):
            self.validate(owner)  # raises: medicationReference must be a Reference
            return None
        ref = (reference or {}).get("reference")
        if not isinstance(ref, str):
            return None
        if ref.startswith("#"):
            contained_list = owner.get("contained") or []
            if not isinstance(contained_list, list):
                self.validate(owner)  # raises: contained must be a list
                return None
            for contained in contained_list:
                if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                    if contained.get("resourceType") != "Medication":
                        self.validate(owner)  # names the malformed resource
                    return contained
            return None
        return self.medications_by_ref.get(ref)


def wellformed_concept(concept: Any) -> bool:
    """Whether a CodeableConcept has the shape the fact builders can read (or is simply absent).

    A resource of a type the rules read whose concept is malformed cannot be judged irrelevant, so
    callers validate it instead of skipping it: the caller gets an error naming it, never silence.
    """
    if concept is None:
        return True
    if not isinstance(concept, dict):
        return False
    codings = concept.get("coding")
    if codings is not None and (not isinstance(codings, list) or not all(isinstance(c, dict) for c in codings)):
        return False
    text = concept.get("text")
    return text is None or isinstance(text, str)


def parse_json(text: str | bytes, *, source: str = "input") -> Any:
    """``json.loads`` with an error that names the source and the position."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotJSONError(
            f"{source} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except UnicodeDecodeError as exc:
        raise NotJSONError(f"{source} is not UTF-8 text: {exc.reason}") from None


def _bundle_resources(bundle: dict[str, Any], where: str) -> list[tuple[dict[str, Any], str | None]]:
    entries = bundle.get("entry", [])
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InvalidRequestError(f"{where}.entry must be a list", field=f"{where}.entry")
    found: list[tuple[dict[str, Any], str | None]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidRequestError(
                f"{where}.entry[{index}] must be an object", field=f"{where}.entry[{index}]"
            )
        resource = entry.get("resource")
        if resource is None:
            continue
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise InvalidRequestError(
                f"{where}.entry[{index}].resource has no resourceType",
                field=f"{where}.entry[{index}].resource",
            )
        if resource["resourceType"] == "Bundle":
            found.extend(_bundle_resources(resource, f"{where}.entry[{index}].resource"))
        else:
            full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
            found.append((resource, full_url))
    return found


def _collect(value: Any, where: str, notes: list[str]) -> list[tuple[dict[str, Any], str | None]]:
    """Resources held by one prefetch value or payload, whatever its shape."""
    if value is None:
        return []
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise InvalidRequestError(
            f"{where} must be a FHIR resource or Bundle (no resourceType found)", field=where
        )
    if value["resourceType"] == "Bundle":
        return _bundle_resources(value, where)
    if value["resourceType"] == "OperationOutcome":
        notes.append(f"{where} holds an OperationOutcome (the EHR could not prefetch it)")
        return []
    return [(value, None)]


def _reference_of(resource: dict[str, Any]) -> str | None:
    field_name = _SUBJECT_FIELD.get(resource["resourceType"])
    if field_name is None:
        return None
    ref = resource.get(field_name)
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        return ref["reference"]
    return None


def _choose_patient(
    pairs: list[tuple[dict[str, Any], str | None]], patient_id: str | None, where: str
) -> tuple[dict[str, Any] | None, set[str]]:
    patients = [(r, url) for r, url in pairs if r["resourceType"] == "Patient"]
    for resource, _url in patients:
        if not isinstance(resource.get("id", ""), str):
            validate_resource({k: v for k, v in resource.items() if k in PATIENT_ELEMENTS_READ})  # names it
    chosen: tuple[dict[str, Any], str | None] | None = None
    if patient_id:
        for resource, url in patients:
            if resource.get("id") == patient_id:
                chosen = (resource, url)
                break
    elif len({p[0].get("id") for p in patients}) > 1:
        raise InvalidRequestError(
            f"{where} holds {len(patients)} different patients; name one with context.patientId",
            field="context.patientId",
        )
    elif patients:
        chosen = patients[0]
    pid = patient_id or (chosen[0].get("id") if chosen else None)
    keys: set[str] = set()
    if pid:
        keys |= {f"Patient/{pid}", f"urn:uuid:{pid}", pid}
    if chosen and chosen[1]:
        keys.add(chosen[1])
    return (chosen[0] if chosen else None), keys


def _belongs(resource: dict[str, Any], keys: set[str]) -> bool:
    ref = _reference_of(resource)
    if ref is None or not keys:
        return True
    if ref in keys:
        return True
    # absolute URLs ending in Patient/<id>
    return any(ref.endswith("/" + k) for k in keys if k.startswith("Patient/"))


def ingest(payload: Any, *, hook: str | None = None, where: str = "input") -> PatientRecord:
    """Build a :class:`PatientRecord` from a parsed CDS Hooks request, Bundle or single resource.

    ``hook`` is required for Bundles (default ``patient-view``) and must agree with a request's own hook.
    """
    notes: list[str] = []
    if not isinstance(payload, dict):
        raise InvalidRequestError(f"{where} must be a JSON object, not {type(payload).__name__}")
    is_request = "resourceType" not in payload and ("hook" in payload or "context" in payload)
    draft_pairs: list[tuple[dict[str, Any], str | None]] = []
    selections: list[str] = []
    if is_request:
        request_hook = payload.get("hook")
        if not isinstance(request_hook, str) or not request_hook:
            raise InvalidRequestError("CDS Hooks request has no 'hook'", field="hook")
        if hook is not None and hook != request_hook:
            raise InvalidRequestError(
                f"the request is for hook {request_hook!r} but {hook!r} was asked for", field="hook"
            )
        hook = request_hook
        context = payload.get("context")
        if not isinstance(context, dict):
            raise InvalidRequestError("CDS Hooks request has no 'context' object", field="context")
        patient_id = context.get("patientId")
        if patient_id is not None and not isinstance(patient_id, str):
            raise InvalidRequestError("context.patientId must be a string", field="context.patientId")
        prefetch = payload.get("prefetch") or {}
        if not isinstance(prefetch, dict):
            raise InvalidRequestError("prefetch must be an object", field="prefetch")
        pairs: list[tuple[dict[str, Any], str | None]] = []
        for key, value in prefetch.items():
            pairs.extend(_collect(value, f"prefetch.{key}", notes))
        drafts = context.get("draftOrders")
        if drafts is not None:
            if not isinstance(drafts, dict) or drafts.get("resourceType") != "Bundle":
                raise InvalidRequestError(
                    "context.draftOrders must be a FHIR Bundle", field="context.draftOrders"
                )
            draft_pairs = _bundle_resources(drafts, "context.draftOrders")
        raw_selections = context.get("selections") or []
        if not isinstance(raw_selections, list) or not all(isinstance(s, str) for s in raw_selections):
            raise InvalidRequestError(
                "context.selections must be a list of strings", field="context.selections"
            )
        selections = list(raw_selections)
        source = "cds-hooks-request"
    else:
        hook = hook or "patient-view"
        patient_id = None
        pairs = _collect(payload, where, notes)
        source = "bundle"
    if hook not in HOOKS:
        raise InvalidRequestError(
            f"hook {hook!r} is not supported (supported: {', '.join(HOOKS)})", field="hook"
        )

    patient, keys = _choose_patient(pairs + draft_pairs, patient_id, where)
    if patient is not None:
        # Only the elements the facts read are validated: a Synthea Patient's extensions, narrative
        # and addresses cost ~10 ms to validate and can never change a card. Done first, because the
        # patient's id decides which other resources belong to this patient.
        validate_resource({k: v for k, v in patient.items() if k in PATIENT_ELEMENTS_READ})
    resources: dict[str, list[dict[str, Any]]] = {}
    medications: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    dropped = 0
    for resource, full_url in pairs:
        rtype = resource["resourceType"]
        if rtype not in RELEVANT_TYPES or rtype == "Patient":
            continue
        if rtype == "Medication":
            if resource.get("id"):
                medications[f"Medication/{resource['id']}"] = resource
            if full_url:
                medications[full_url] = resource
            continue
        if not _belongs(resource, keys):
            dropped += 1
            continue
        rid = resource.get("id")
        if isinstance(rid, str):
            if (rtype, rid) in seen:
                continue  # the same resource delivered by two prefetch keys counts once
            seen.add((rtype, rid))
        resources.setdefault(rtype, []).append(resource)
    if dropped:
        notes.append(f"{dropped} resource(s) about another patient were ignored")

    draft_orders: list[dict[str, Any]] = []
    if is_request:
        for resource, full_url in draft_pairs:
            rtype = resource["resourceType"]
            if rtype == "Medication":
                if resource.get("id"):
                    medications[f"Medication/{resource['id']}"] = resource
                if full_url:
                    medications[full_url] = resource
            elif rtype in RELEVANT_TYPES and rtype != "Patient":
                draft_orders.append(resource)
    elif hook != "patient-view":
        # A bare Bundle evaluated for an order hook: its draft requests are the orders being placed.
        for rtype in ("MedicationRequest", "DeviceRequest", "SupplyRequest", "ServiceRequest"):
            kept: list[dict[str, Any]] = []
            for resource in resources.get(rtype, []):
                (draft_orders if resource.get("status") == "draft" else kept).append(resource)
            if rtype in resources:
                resources[rtype] = kept

    if patient is not None and patient_id is None:
        patient_id = patient.get("id")
    record = PatientRecord(
        hook=hook,
        patient_id=patient_id,
        patient=patient,
        resources=resources,
        draft_orders=draft_orders,
        selections=selections,
        medications_by_ref=medications,
        notes=notes,
        source=source,
    )
    return record


__all__ += ["resource_label"]
