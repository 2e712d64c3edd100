"""The service catalogue: one CDS service per hook, with prefetch templates derived from the rules.

Why derived: "exactly the data the rules need" changes whenever an informatician edits a value set
or ``labs.yaml``. The Observation template lists the (system, code) pairs of the loaded observation
value sets (every lab and body-measure fact, and the NYHA code), so a rules change updates discovery with
no code change. Other resource types are matched by code *and by text* (value-set ``names``), which
FHIR search cannot express, so their templates ask for the patient's resources of that type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds.facts.special import NYHA_LOINC

__all__ = ["SERVICE_IDS", "ServiceDefinition", "build_catalog", "observation_codes", "prefetch_templates"]

PATIENT = "{{context.patientId}}"
LOINC = "http://loinc.org"

# Service id per hook. Stable: EHRs register these ids.
SERVICE_IDS = {
    "patient-view": "sir-patient-view",
    "order-select": "sir-order-select",
    "order-sign": "sir-order-sign",
}

_TITLES = {
    "patient-view": "Severe insulin resistance and lipodystrophy: chart review",
    "order-select": "Severe insulin resistance and lipodystrophy: order check while selecting",
    "order-sign": "Severe insulin resistance and lipodystrophy: order check before signing",
}

_WHEN = {
    "patient-view": "When a patient's chart is opened, checks the record",
    "order-select": "When orders are selected, checks the draft orders against the record",
    "order-sign": "Before orders are signed, checks the draft orders against the record",
}


@dataclass(frozen=True)
class ServiceDefinition:
    """One entry of the discovery document."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str] = field(default_factory=dict)
    rule_ids: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"hook": self.hook, "title": self.title, "description": self.description,
                                "id": self.id}
        if self.prefetch:
            body["prefetch"] = dict(self.prefetch)
        return body


def _systems(valueset: Any) -> list[str]:
    systems = valueset.systems
    return list(systems() if callable(systems) else systems)


def observation_codes(ruleset: Any) -> list[tuple[str, str]]:
    """Every (system, code) of the observation value sets (labs, body measures, NYHA...), sorted.

    Observations matched by text only (e.g. anti-insulin-receptor antibodies without a LOINC code)
    cannot be asked for by code; an EHR that codes them locally must send them in prefetch.
    """
    pairs: set[tuple[str, str]] = set()
    for valueset in ruleset.valuesets.values():
        if getattr(valueset, "kind", None) == "observation":
            for system in _systems(valueset):
                pairs |= {(system, code) for code in valueset.codes_for(system)}
    pairs.add((LOINC, NYHA_LOINC))  # cds.facts.special reads the NYHA class by this code
    return sorted(pairs)


def prefetch_templates(ruleset: Any) -> dict[str, str]:
    """Prefetch key -> FHIR query template for the data the loaded rules read."""
    kinds = {getattr(vs, "kind", None) for vs in ruleset.valuesets.values()}
    templates = {"patient": f"Patient/{PATIENT}"}
    codes = observation_codes(ruleset)
    if codes:
        joined = ",".join(f"{system}|{code}" for system, code in codes)
        templates["observations"] = f"Observation?patient={PATIENT}&code={joined}"
    if "condition" in kinds:
        templates["conditions"] = f"Condition?patient={PATIENT}"
    if kinds & {"medication", "device"}:
        templates["medicationRequests"] = (
            f"MedicationRequest?patient={PATIENT}&_include=MedicationRequest:medication"
        )
    if "medication" in kinds:
        templates["medicationStatements"] = (
            f"MedicationStatement?patient={PATIENT}&_include=MedicationStatement:medication"
        )
        templates["allergies"] = f"AllergyIntolerance?patient={PATIENT}"
    if "procedure" in kinds:
        templates["serviceRequests"] = f"ServiceRequest?patient={PATIENT}"
    if "device" in kinds:
        templates["deviceRequests"] = f"DeviceRequest?patient={PATIENT}"
    return templates


def _rule_hooks(rule: Any) -> set[str]:
    hooks = set(getattr(rule.spec, "hooks", None) or ())
    for card in getattr(rule.spec, "cards", None) or ():
        hooks |= set(getattr(card, "hooks", None) or ())
    return hooks


def build_catalog(engine: Any) -> dict[str, ServiceDefinition]:
    """Service id -> definition for the loaded engine (one per supported hook)."""
    templates = prefetch_templates(engine.ruleset)
    catalog: dict[str, ServiceDefinition] = {}
    for hook, service_id in SERVICE_IDS.items():
        rules = [r for r in engine.rules if hook in _rule_hooks(r)]
        titles = "; ".join(r.spec.title for r in rules) or "no rule is active for this hook yet"
        description = (
            f"{_WHEN[hook]} for severe insulin resistance (SIR) and lipodystrophy care pathways and "
            f"returns cards with the evidence and next steps. Rules ({len(rules)}): {titles}."
        )
        catalog[service_id] = ServiceDefinition(
            id=service_id, hook=hook, title=_TITLES[hook], description=description, prefetch=templates,
            rule_ids=tuple(r.spec.id for r in rules),
        )
    return catalog
