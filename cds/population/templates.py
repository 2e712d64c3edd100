"""Compile patient templates into ``%``-format text, so generating a patient is a few C-level operations.

Why text templates: a 100,000-patient export holds millions of resources; building and serialising
dicts per resource would take many minutes. Each template resource is serialised once with markers
where the new patient id, the shifted dates and the jittered values go; the markers become ``%s``
slots and ``operator.itemgetter`` picks each patient's values for them in C.

Two kinds of templates:

- *ordinary* patients from the Synthea bundles (``../shared/data/synthea-r4``): only the resource types
  a screen reads are kept, observations older than ``history_years`` before the patient's latest record
  are left out (as a screening extract would), references to resources that are not exported
  (encounters, practitioners, claims) are dropped so that every reference in the export resolves.
- *planted* patients from the ``fhir_samples`` evaluated on ``patient-view``: their dates keep their
  distance to the sample's evaluation time (look-back edges are the point of those samples), and their
  values are never jittered (threshold edges are too); the label is the manifest's expected cards.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cds._exceptions import InputError

__all__ = [
    "EXPORT_TYPES",
    "RECOGNITION_RULES",
    "CompiledTemplate",
    "compile_template",
    "load_templates",
    "sample_templates",
    "synthea_templates",
]

# Resource types a screen reads (cds/fhir/ingest.py reads these by resourceType); the rest of a Synthea
# record (claims, encounters, care plans, imaging) is not part of a screening extract.
EXPORT_TYPES = (
    "Patient", "Observation", "Condition", "MedicationRequest", "MedicationStatement", "Medication",
    "AllergyIntolerance", "Procedure", "ServiceRequest", "DeviceRequest",
)

# The recognition pathways the labels file reports on (pathways.md section 1); the other rules are
# listed in the ``expected`` column.
RECOGNITION_RULES = (
    "sir-suspected", "sir-case-finding", "receptor-defect-pattern", "lipodystrophy-pattern",
    "type-b-suspected",
)

# Diabetes in a Synthea record: SNOMED CT 44054006 type 2, 46635009 type 1 (not 15777000 prediabetes).
_DIABETES_CODES = {"44054006", "46635009"}

_PID = "@@P@@"
_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?$")
_MARK_RE = re.compile(r"@@P@@|@@D(\d+)@@|\"@@V(\d+)@@\"")
_DROP = object()


@dataclass
class CompiledTemplate:
    """One patient template: per resource type, a ``%`` format string and the slot picker for it."""

    name: str
    kind: str  # "ordinary" or "planted"
    diabetes: bool
    dates: list[int]  # proleptic ordinals of the distinct dates, slot 1..len(dates)
    values: list[tuple[float, int]]  # (value, decimals) of jittered numbers
    types: dict[str, tuple[str, Callable[[list[str]], Any], int]] = field(default_factory=dict)
    last_date: int = 0  # ordinal of the latest date in the record
    base_shift: int = 0  # planted: days from the sample's evaluation day to the population's
    label: tuple[str, ...] = ()
    expected: dict[str, str] = field(default_factory=dict)

    @property
    def resources(self) -> int:
        return sum(count for _, _, count in self.types.values())


def _resources_of_prefetch(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for value in (request.get("prefetch") or {}).values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry") or []:
                resource = entry.get("resource")
                if isinstance(resource, dict):
                    yield resource
        else:
            yield value


def _keep_recent(resources: list[dict[str, Any]], history_years: int) -> list[dict[str, Any]]:
    """Drop observations older than ``history_years`` before the record's latest observation."""
    days = [_effective_day(r) for r in resources if r.get("resourceType") == "Observation"]
    known = [d for d in days if d is not None]
    if not known:
        return resources
    cutoff = max(known) - 365 * history_years
    kept = []
    for resource in resources:
        if resource.get("resourceType") == "Observation":
            day = _effective_day(resource)
            if day is not None and day < cutoff:
                continue
        kept.append(resource)
    return kept


def _effective_day(resource: dict[str, Any]) -> int | None:
    when = resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start") \
        or resource.get("issued")
    if isinstance(when, str) and len(when) >= 10:
        try:
            return dt.date.fromisoformat(when[:10]).toordinal()
        except ValueError:
            return None
    return None


def compile_template(
    name: str,
    kind: str,
    resources: list[dict[str, Any]],
    *,
    full_urls: dict[str, str] | None = None,
    jitter: bool,
) -> CompiledTemplate:
    """Compile one patient's resources (exactly one Patient among them) into a template.

    ``full_urls`` maps a bundle entry's fullUrl (``urn:uuid:...``) to ``Type/id`` so bundle-style
    references become bulk-style ``Type/<new id>``. A reference to a resource outside the template is
    removed (the field, or the list element); a subject or medication reference that does not resolve
    is a template error, since dropping it would change what the record means.
    """
    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    if len(patients) != 1:
        raise InputError(f"{name}: a template needs exactly one Patient, found {len(patients)}")
    new_ids: dict[str, str] = {}
    resources = [r for r in resources if r.get("resourceType") in EXPORT_TYPES]
    for index, resource in enumerate(resources):
        new_id = _PID if resource["resourceType"] == "Patient" else f"{_PID}-{index}"
        new_ids[f"{resource['resourceType']}/{resource['id']}"] = f"{resource['resourceType']}/{new_id}"
    for url, ref in (full_urls or {}).items():
        if ref in new_ids:
            new_ids[url] = new_ids[ref]
    # A fullUrl such as https://ehr.example.org/fhir/Observation/x also resolves by its last two parts.
    date_slots: dict[str, int] = {}
    value_slots: list[tuple[float, int]] = []

    def convert(value: Any, key: str) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                if key == "" and k in {"meta", "text", "identifier"}:
                    continue  # narrative, provenance tags and MRNs: copies must not share identifiers
                if k == "reference" and isinstance(v, str):
                    target = new_ids.get(v) or new_ids.get("/".join(v.rsplit("/", 2)[-2:]))
                    if target is None:
                        if v.startswith("#"):
                            out[k] = v
                            continue
                        if key in {"subject", "patient", "medicationReference"}:
                            raise InputError(f"{name}: {key}.reference {v!r} does not resolve in the template")
                        return _DROP
                    out[k] = target
                    continue
                if k == "value" and key == "valueQuantity" and jitter and isinstance(v, (int, float)) \
                        and not isinstance(v, bool):
                    decimals = 0 if isinstance(v, int) else min(2, len(repr(v).split(".")[-1]))
                    value_slots.append((float(v), decimals))
                    out[k] = f"@@V{len(value_slots)}@@"
                    continue
                converted = convert(v, k)
                if converted is not _DROP:
                    out[k] = converted
            return out
        if isinstance(value, list):
            items = [convert(v, key) for v in value]
            kept = [v for v in items if v is not _DROP]
            return kept if kept or not value else _DROP
        if isinstance(value, str):
            match = _DATE_RE.match(value)
            if match and key not in {"id", "code", "value", "reference", "display"}:
                slot = date_slots.setdefault(match.group(1), len(date_slots) + 1)
                return f"@@D{slot}@@{match.group(2) or ''}"
        return value

    by_type: dict[str, list[str]] = {}
    for resource in resources:
        converted = convert(resource, "")
        rtype = resource["resourceType"]
        converted["id"] = new_ids[f"{rtype}/{resource['id']}"].split("/", 1)[1]
        by_type.setdefault(rtype, []).append(json.dumps(converted, ensure_ascii=False, separators=(",", ":")))
    ordinals = [dt.date.fromisoformat(day).toordinal() for day in date_slots]
    template = CompiledTemplate(name=name, kind=kind, diabetes=_has_diabetes(resources),
                                dates=ordinals, values=value_slots, last_date=max(ordinals, default=0))
    for rtype, lines in by_type.items():
        text = "\n".join(lines) + "\n"
        slots: list[int] = []

        def to_slot(match: re.Match[str], slots: list[int] = slots) -> str:
            if match.group(0) == _PID:
                slots.append(0)
            elif match.group(1) is not None:
                slots.append(int(match.group(1)))
            else:
                slots.append(len(ordinals) + int(match.group(2)))
            return "%s"

        fmt = _MARK_RE.sub(to_slot, text.replace("%", "%%"))
        template.types[rtype] = (fmt, _picker(slots), len(lines))
    return template


def _picker(slots: list[int]) -> Callable[[list[str]], Any]:
    if not slots:
        return lambda table: ()
    if len(slots) == 1:
        only = slots[0]
        return lambda table: (table[only],)
    return operator.itemgetter(*slots)


def _has_diabetes(resources: list[dict[str, Any]]) -> bool:
    for resource in resources:
        if resource.get("resourceType") != "Condition":
            continue
        for coding in (resource.get("code") or {}).get("coding") or []:
            if coding.get("code") in _DIABETES_CODES:
                return True
    return False


def synthea_templates(folder: Path, *, history_years: int = 3) -> list[CompiledTemplate]:
    """The ordinary population: every Synthea bundle in ``folder`` (sorted by name, for determinism)."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise InputError(f"{folder}: no Synthea bundles (*.json) found")
    templates = []
    for path in files:
        try:
            bundle = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not readable JSON: {exc}") from exc
        entries = bundle.get("entry") or []
        resources = [e["resource"] for e in entries if isinstance(e.get("resource"), dict)]
        full_urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
                     for e in entries if e.get("fullUrl") and isinstance(e.get("resource"), dict)}
        templates.append(compile_template(path.stem, "ordinary", _keep_recent(resources, history_years),
                                          full_urls=full_urls, jitter=True))
    return templates


def sample_templates(samples_dir: Path, population_now: dt.datetime) -> list[CompiledTemplate]:
    """The planted patients: every ``patient-view`` sample of the ``manifest-*.yaml`` files."""
    templates = []
    for manifest in sorted(samples_dir.glob("manifest-*.yaml")):
        entries = (yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}).get("samples") or []
        for entry in entries:
            path = samples_dir / entry["file"]
            payload = json.loads(path.read_text(encoding="utf-8"))
            if payload.get("resourceType") == "Bundle":
                if entry.get("hook") != "patient-view":
                    continue
                items = payload.get("entry") or []
                resources = [e["resource"] for e in items if isinstance(e.get("resource"), dict)]
                full_urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
                             for e in items if e.get("fullUrl") and isinstance(e.get("resource"), dict)}
            else:
                if payload.get("hook") != "patient-view":
                    continue
                resources = list(_resources_of_prefetch(payload))
                full_urls = {}
            sample_now = dt.datetime.fromisoformat(str(entry["now"]).replace("Z", "+00:00"))
            template = compile_template(entry["file"], "planted", resources, full_urls=full_urls, jitter=False)
            template.base_shift = population_now.date().toordinal() - sample_now.date().toordinal()
            template.expected = dict(entry.get("expect") or {})
            template.label = tuple(rule for rule in RECOGNITION_RULES if rule in template.expected)
            templates.append(template)
    if not templates:
        raise InputError(f"{samples_dir}: no patient-view samples in manifest-*.yaml")
    return templates


def load_templates(synthea_dir: Path, samples_dir: Path, population_now: dt.datetime,
                   *, history_years: int = 3) -> tuple[list[CompiledTemplate], list[CompiledTemplate]]:
    """(ordinary, planted) templates."""
    return synthea_templates(synthea_dir, history_years=history_years), sample_templates(samples_dir, population_now)
