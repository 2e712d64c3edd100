"""Render a fired rule's card: Jinja templates over the patient's facts -> a validated Card.

Templates run in a sandboxed Jinja environment with ``StrictUndefined`` so a typo in a template is an
error at validation time, not a blank in front of a clinician. Every FHIR resource a suggestion
creates or updates is validated with fhir.resources (R4B) before it leaves the engine.
"""

from __future__ import annotations

import copy
import functools
import re
import uuid
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from cds._exceptions import EngineError
from cds.codesystems import OVERRIDE_REASON_SYSTEM, RULE_SYSTEM
from cds.cards.models import Action, Card, Coding, Link, Source, Suggestion
from cds.facts.models import CodedItem, LabValue, PatientFacts, fmt_number
from cds.fhir.validation import validate_resource

__all__ = ["RULE_SYSTEM", "TEMPLATE_NAMES", "create_resource", "parse_template", "plain_unit", "plain_units",
           "render_card", "template_context"]

TEMPLATE_NAMES = frozenset({
    "patient", "lab", "last", "fact", "t", "conditions", "medications", "allergies", "procedures",
    "devices", "insulin", "bmi_source", "bmi_z", "now", "drafts", "notes", "rule", "unreadable", "shown",
})
DEFAULT_OVERRIDE_REASONS = [
    Coding(system=OVERRIDE_REASON_SYSTEM, code="not-applicable",
           display="Not applicable to this patient"),
    Coding(system=OVERRIDE_REASON_SYSTEM, code="already-addressed",
           display="Already addressed"),
    Coding(system=OVERRIDE_REASON_SYSTEM, code="data-incorrect",
           display="The patient data shown is incorrect"),
]

# UCUM codes as a clinician reads them (issue 12: "mL/min/1.73 m2", not "mL/min/{1.73_m2}").
_PLAIN_UNITS = {
    "mL/min/{1.73_m2}": "mL/min/1.73 m2",
    "a": "years",
    "d": "days",
    "U/d": "U/day",
    "U/kg/d": "U/kg/day",
    "[IU]/L": "IU/L",
    "[uIU]/mL": "uIU/mL",
    "10*9/L": "x10^9/L",
}
_UCUM_ANNOTATION = re.compile(r"\{([^{}]*)\}")
_RESOURCE_ID = re.compile(
    r"\b(Observation|MedicationRequest|MedicationStatement|Condition|ServiceRequest|Procedure|Device|"
    r"DeviceRequest|AllergyIntolerance|Encounter)/[A-Za-z0-9\-.]{1,64}\b")
_TYPE_WORDS = {"Observation": "result", "MedicationRequest": "medication order", "MedicationStatement": "medication",
               "Condition": "diagnosis", "ServiceRequest": "request", "Procedure": "procedure", "Device": "device",
               "DeviceRequest": "device order", "AllergyIntolerance": "allergy", "Encounter": "encounter"}


def plain_unit(unit: str | None) -> str:
    """A UCUM code in plain notation: known codes spelled out, annotation braces and underscores gone."""
    if not unit:
        return ""
    if unit in _PLAIN_UNITS:
        return _PLAIN_UNITS[unit]
    return _UCUM_ANNOTATION.sub(lambda m: m.group(1).replace("_", " "), unit).replace("[", "").replace("]", "")


def plain_units(text: str) -> str:
    """Every UCUM annotation in running text made plain: "30 mL/min/{1.73_m2}" -> "30 mL/min/1.73 m2"."""
    for code in ("[IU]/L", "[uIU]/mL"):
        text = text.replace(code, _PLAIN_UNITS[code])
    return _UCUM_ANNOTATION.sub(lambda m: m.group(1).replace("_", " "), text) if "{" in text else text


def _named(text: str, names: dict[str, str]) -> str:
    """FHIR resource ids in card text replaced by what the resource is (its display name)."""
    def name(match: re.Match[str]) -> str:
        return names.get(match.group(0)) or _TYPE_WORDS.get(match.group(1), "record")
    return _RESOURCE_ID.sub(name, text)


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["num"] = lambda v: fmt_number(v) if isinstance(v, (int, float)) else str(v)
# pathways.md 2 "doses in whole units" and 1 "U/kg to one decimal": {{ fact.insulin_tdd|units }},
# {{ fact.insulin_u_per_kg|ukg }}; anything not a number prints as itself ("not recorded")
_ENV.filters["units"] = lambda v: fmt_number(round(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
_ENV.filters["ukg"] = lambda v: f"{v:.1f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def parse_template(template: str) -> Any:
    """Parse (not render) a card template as cards are rendered: raises ``jinja2.TemplateSyntaxError``.

    For the validators (``cds.rules.validators``), which inspect the parsed template's names.
    """
    return _ENV.parse(template)


class NotRecorded:
    """Stands for a missing value in templates: prints "not recorded" and is falsy."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return "not recorded"

    def describe(self) -> str:
        return "not recorded"


class _View:
    """Attribute access over a dict for templates: ``lab.egfr``; a missing key is NotRecorded / []."""

    def __init__(self, data: dict[str, Any], empty: Any) -> None:
        self._data = data
        self._empty = empty

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        key = name.replace("_", "-") if name.replace("_", "-") in self._data else name
        value = self._data.get(key)
        if value is None:
            return self._empty(name) if callable(self._empty) else self._empty
        return value

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)


class _Shown:
    """``{{ shown.alt_x_uln }}``: a bounded fact as written, for card text (pathways.md 1 Comparators).

    ``fact.x|num`` prints "not recorded" for a bound (the point fact is unset when only a bound is
    known), so a deciding ALT ">500" showed as "not recorded x ULN". This prints the point ("12.5"),
    the bound (">12.5", "<=0.4"), an interval ("0.2-0.5", unit not stated), "could not be read", or
    "not recorded" from the flat ``<fact>``/``_low``/``_high``/``_unreadable`` values.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        v = self._values
        point = v.get(name)
        if isinstance(point, (int, float)) and not isinstance(point, bool):
            return fmt_number(point)
        if v.get(f"{name}_unreadable"):
            return "could not be read"
        low, high = v.get(f"{name}_low"), v.get(f"{name}_high")
        if low is not None and high is not None:
            return fmt_number(low) if low == high else f"{fmt_number(low)}-{fmt_number(high)}"
        if low is not None:
            return (">=" if v.get(f"{name}_low_inclusive") else ">") + fmt_number(low)
        if high is not None:
            return ("<=" if v.get(f"{name}_high_inclusive") else "<") + fmt_number(high)
        return "not recorded"

    def __getitem__(self, name: str) -> str:
        return self.__getattr__(name)


class _PlainLab:
    """A lab value as card text prints it: plain units; every attribute is the LabValue's own."""

    def __init__(self, value: LabValue) -> None:
        self._value = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._value, name)

    def __bool__(self) -> bool:
        return True

    def describe(self) -> str:
        return plain_units(self._value.describe())

    def __str__(self) -> str:
        return self.describe()


def _plain_labs(labs: dict[str, Any]) -> dict[str, Any]:
    return {k: _PlainLab(v) if isinstance(v, LabValue) else v for k, v in labs.items()}


def _resource_names(facts: PatientFacts) -> dict[str, str]:
    """``MedicationRequest/x`` -> "Humulin R U-100": every coded item the facts matched, by resource."""
    names: dict[str, str] = {}
    for group in (facts.medications, facts.conditions, facts.procedures, facts.devices, facts.allergies):
        for items in group.values():
            for item in items:
                if isinstance(item, CodedItem) and item.resource and item.display:
                    names.setdefault(item.resource, item.display)
    return names


def _named_insulin(facts: PatientFacts, names: dict[str, str]) -> Any:
    insulin = facts.insulin
    if insulin is None or not hasattr(insulin, "model_copy"):
        return insulin
    return insulin.model_copy(update={"items": [_named(i, names) for i in insulin.items],
                                      "unknown_reasons": [_named(r, names) for r in insulin.unknown_reasons]})


class Threshold:
    def __init__(self, value: float, unit: str | None) -> None:
        self.value, self.unit = value, unit

    def __str__(self) -> str:
        return fmt_number(self.value) + (f" {self.unit}" if self.unit else "")


def template_context(facts: PatientFacts, thresholds: dict[str, Any], rule: Any) -> dict[str, Any]:
    """The names a card template can use (documented in rulesets/README.md).

    Lab values print with plain units, and insulin dose lines name the medication instead of its
    FHIR resource id (issue 12: a clinician reads names and dates, not ``MedicationRequest/x``).
    """
    names = _resource_names(facts)
    return {
        "patient": {"id": facts.patient_id, "age": fmt_number(facts.age_years) if facts.age_years is not None else "unknown",
                    "age_years": int(facts.age_years) if facts.age_years is not None else None, "sex": facts.sex},
        "lab": _View(_plain_labs(facts.labs), NotRecorded),
        "last": _View(_plain_labs(facts.last_labs), NotRecorded),
        "fact": _View(facts.values, NotRecorded),
        "t": _View({k: Threshold(v.value, v.unit) for k, v in thresholds.items()}, NotRecorded),
        "conditions": _View(facts.conditions, []),
        "medications": _View(facts.medications, []),
        "allergies": _View(facts.allergies, []),
        "procedures": _View(facts.procedures, []),
        "devices": _View(facts.devices, []),
        "insulin": _named_insulin(facts, names),
        "bmi_source": facts.bmi_source or "not available",
        "bmi_z": facts.bmi_z,
        "now": facts.now.date().isoformat(),
        "drafts": _View(facts.draft_ids, []),
        "notes": facts.notes,
        "rule": {"id": rule.id, "title": rule.title, "version": rule.version},
        # pathways.md 1 (Three states): {{ unreadable.egfr }} -> "eGFR of 2026-10-01 could not be
        # read ('see report')"; falsy NotRecorded when the fact was readable or absent
        "unreadable": _View(facts.unreadable, NotRecorded),
        "shown": _Shown(facts.values),
    }


@functools.lru_cache(maxsize=4096)
def _compiled(template: str) -> Any:
    """Templates are compiled once (a Jinja compile costs ~1 ms; a render ~20 us)."""
    return _ENV.from_string(template)


def render_text(template: str, context: dict[str, Any], where: str) -> str:
    try:
        return _compiled(template).render(context)
    except TemplateError as exc:
        raise EngineError(f"{where}: template error: {exc}") from exc


def _render_data(value: Any, context: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        return render_text(value, context, where) if "{" in value else value
    if isinstance(value, list):
        return [_render_data(v, context, where) for v in value]
    if isinstance(value, dict):
        return {k: _render_data(v, context, where) for k, v in value.items()}
    return value


def _subject(facts: PatientFacts) -> dict[str, str] | None:
    return {"reference": f"Patient/{facts.patient_id}"} if facts.patient_id else None


def create_resource(template: dict[str, Any], facts: PatientFacts, context: dict[str, Any], where: str) -> dict[str, Any]:
    """Render a suggestion's ``create`` template into a FHIR resource and validate it (EngineError if invalid)."""
    resource = _render_data(copy.deepcopy(template), context, where)
    rtype = resource.get("resourceType")
    if rtype in ("ServiceRequest", "MedicationRequest", "DeviceRequest") and "subject" not in resource:
        subject = _subject(facts)
        if subject:
            resource["subject"] = subject
    if "authoredOn" not in resource and rtype in ("ServiceRequest", "MedicationRequest", "DeviceRequest"):
        resource["authoredOn"] = facts.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    validate_resource(resource)
    return resource


def _actions(
    spec: Any, facts: PatientFacts, raw_requests: dict[str, dict[str, Any]], context: dict[str, Any], where: str
) -> list[Action]:
    actions: list[Action] = []
    for action in spec.actions:
        description = render_text(action.description, context, where) if action.description else None
        if action.create is not None:
            resource = create_resource(action.create, facts, context, where)
            actions.append(
                Action(type="create", description=description or f"Create {resource['resourceType']}", resource=resource)
            )
        elif action.delete_drafts is not None:
            for resource_id in facts.draft_ids.get(action.delete_drafts, []):
                actions.append(Action(type="delete", description=description or f"Remove the drafted order {resource_id}",
                                      resourceId=resource_id))
        elif action.stop_active is not None:
            for resource_id in facts.active_request_ids.get(action.stop_active, []):
                original = raw_requests.get(resource_id)
                if original is None:
                    continue
                updated = copy.deepcopy(original)
                updated["status"] = "stopped"
                validate_resource(updated)
                actions.append(Action(type="update", description=description or f"Stop {resource_id}",
                                      resource=updated, resourceId=resource_id))
    return actions


def render_card(
    rule: Any,
    card_index: int,
    facts: PatientFacts,
    raw_requests: dict[str, dict[str, Any]],
    *,
    global_thresholds: dict[str, Any],
    card_uuid: str | None = None,
    withheld: set[int] | frozenset[int] = frozenset(),
) -> Card:
    """Render card ``card_index`` of ``rule`` (a RuleSpec) for this patient.

    ``global_thresholds`` are the shared ones of definitions.yaml; the rule's own override them.
    """
    spec = rule.cards[card_index]
    where = f"rule {rule.id} card {card_index}"
    card_uuid = card_uuid or str(uuid.uuid4())  # suggestion uuids derive from it: unique per card
    context = template_context(facts, {**global_thresholds, **rule.thresholds}, rule)
    summary = " ".join(render_text(spec.summary, context, where).split())
    if len(summary) >= 140:
        summary = summary[:136].rstrip() + "..."
    detail = _named(plain_units(render_text(spec.detail, context, where).strip()), _resource_names(facts))
    suggestions = []
    for number, suggestion in enumerate(spec.suggestions):
        if number in withheld:
            continue  # its own `when` did not match (e.g. a lab test with a recent result)
        actions = _actions(suggestion, facts, raw_requests, context, where)
        if not actions:
            continue  # e.g. "delete the draft" on patient-view: nothing to delete
        suggestions.append(Suggestion(
            label=render_text(suggestion.label, context, where),
            uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:uuid:{card_uuid}/suggestion/{number}")),
            isRecommended=suggestion.recommended, actions=actions,
        ))
    links = [Link(label=link.label, url=link.url, type=link.type) for link in rule.links] or None
    reasons = [Coding(system=r.system, code=r.code, display=r.display) for r in rule.override_reasons] or DEFAULT_OVERRIDE_REASONS
    return Card(
        uuid=card_uuid,
        summary=summary,
        detail=detail,
        indicator=spec.indicator,
        source=Source(label=rule.source.label, url=rule.source.url,
                      topic=Coding(system=RULE_SYSTEM, code=rule.id, display=rule.title, version=rule.version)),
        suggestions=suggestions or None,
        selectionBehavior=(spec.selection or "at-most-one") if suggestions else None,
        overrideReasons=reasons,
        links=links,
    )


def render_more(rule: Any, card_index: int, facts: PatientFacts, *, global_thresholds: dict[str, Any]) -> str | None:
    """The card's longer explanation (``more``), rendered like ``detail``, for the "why this card" page.

    None when the card has none. Same context, plain units and names as the card's ``detail``.
    """
    spec = rule.cards[card_index]
    if not spec.more:
        return None
    where = f"rule {rule.id} card {card_index} (more)"
    context = template_context(facts, {**global_thresholds, **rule.thresholds}, rule)
    return _named(plain_units(render_text(spec.more, context, where).strip()), _resource_names(facts))


def describe(item: LabValue | CodedItem | NotRecorded | _PlainLab | None) -> str:
    return "not recorded" if item is None else item.describe()


__all__ += ["NotRecorded", "describe", "render_more", "render_text"]
