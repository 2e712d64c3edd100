"""Test populations built from real files: a FHIR Bulk Data export (NDJSON) from ``fhir_samples/`` and
the Synthea bundles, and per-patient Bundles of the same data for ``cds evaluate``.

Every sample becomes its own patient with new ids (the samples reuse ids such as ``pt-1``), and every
reference is rewritten bulk style (``Patient/<id>``, ``Medication/<id>``). The 40 Synthea patients are
added *stripped* of every resource the first pass counts as readable, with new ids: ordinary records
(encounters, immunisations, blood pressure, unrelated conditions) that the first pass must drop and
that, evaluated fully, must give no card (the first-pass proof).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "fhir_samples"
SYNTHEA = Path("/work/shared/data/synthea-r4")
NOW = "2026-11-01T09:00:00Z"


def sample_files() -> list[Path]:
    files = []
    for manifest in sorted(SAMPLES.glob("manifest-*.yaml")):
        for entry in yaml.safe_load(manifest.read_text(encoding="utf-8"))["samples"]:
            files.append(SAMPLES / entry["file"])
    return files


def _flatten(value: Any) -> list[tuple[str | None, dict[str, Any]]]:
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        out = []
        for entry in value.get("entry") or []:
            resource = entry.get("resource")
            if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
                out += _flatten(resource)
            elif isinstance(resource, dict):
                out.append((entry.get("fullUrl"), resource))
        return out
    return [(None, value)] if "resourceType" in value else []


def sample_resources(path: Path) -> list[tuple[str | None, dict[str, Any]]]:
    """(fullUrl, resource) of one sample: a request's prefetch and draft orders, or a Bundle's entries."""
    body = json.loads(path.read_text(encoding="utf-8"))
    if "resourceType" in body:
        return _flatten(body)
    found: list[tuple[str | None, dict[str, Any]]] = []
    for value in (body.get("prefetch") or {}).values():
        found += _flatten(value)
    found += _flatten((body.get("context") or {}).get("draftOrders"))
    return found


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in mapping:
                out[key] = mapping[item]
            else:
                out[key] = _rewrite(item, mapping)
        return out
    if isinstance(value, list):
        return [_rewrite(item, mapping) for item in value]
    return value


def renamed(pairs: list[tuple[str | None, dict[str, Any]]], prefix: str) -> list[dict[str, Any]]:
    """The resources with ids ``<prefix>-<old id>`` and every reference rewritten to ``Type/<new id>``."""
    mapping: dict[str, str] = {}
    patient_ids = [r.get("id") for _u, r in pairs if r["resourceType"] == "Patient"]
    for number, (url, resource) in enumerate(pairs):
        old = resource.get("id") or f"n{number}"
        new = f"{prefix}-{old}"[:64]
        rtype = resource["resourceType"]
        mapping[f"{rtype}/{old}"] = f"{rtype}/{new}"
        if url:
            mapping[url] = f"{rtype}/{new}"
    if not patient_ids:  # the records name their patient only by reference
        for _u, resource in pairs:
            for name in ("subject", "patient"):
                ref = (resource.get(name) or {}).get("reference")
                if isinstance(ref, str) and ref not in mapping:
                    mapping[ref] = f"Patient/{prefix}-patient"
    out = []
    for number, (_url, resource) in enumerate(pairs):
        copy = _rewrite(resource, mapping)
        copy["id"] = f"{prefix}-{resource.get('id') or f'n{number}'}"[:64]
        out.append(copy)
    return out


def write_ndjson(folder: Path, resources: list[dict[str, Any]], *, split: int = 40) -> list[Path]:
    """One file per type; a type with more than ``split`` resources is split (``Type.000.ndjson``...)."""
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for resource in resources:
        by_type[resource["resourceType"]].append(resource)
    written = []
    for rtype, items in sorted(by_type.items()):
        chunks = [items[i:i + split] for i in range(0, len(items), split)] or [[]]
        for number, chunk in enumerate(chunks):
            path = folder / (f"{rtype}.{number:03d}.ndjson" if len(chunks) > 1 else f"{rtype}.ndjson")
            path.write_text("".join(json.dumps(r) + "\n" for r in chunk), encoding="utf-8")
            written.append(path)
    return written


def patient_bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources]}
