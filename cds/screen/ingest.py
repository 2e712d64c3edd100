"""Read a population's FHIR data as a stream of ``(patient id, fullUrl, resource)``, never all at once.

Input shapes (:func:`discover`):

* a FHIR Bulk Data export folder: NDJSON files, one resource type per file, possibly several per type
  (``Observation.000.ndjson``, ``Observation.001.ndjson``);
* the export's manifest JSON (``{"output": [{"type": ..., "url": ...}]}``) whose urls point at local
  files (``file://`` URLs or paths relative to the manifest);
* a folder of FHIR Bundles (``*.json``, e.g. Synthea), or one NDJSON/Bundle file.

References are normalised to the patient's id: ``Patient/<id>``, ``urn:uuid:<id>`` (bundle style, via
the bundle's own fullUrls when a Patient's fullUrl is not its id), absolute ``.../Patient/<id>`` and
``/_history/n`` all name the same patient. Medication resources belong to no patient: they are
yielded with patient id None and kind ``"medication"`` so the caller can attach them to the patients
whose requests reference them. A bad line or file raises :class:`cds._exceptions.InputError` naming
the file and the line: a population screen never skips data silently.

Memory: an NDJSON file is read line by line; a Bundle file is parsed whole (one Bundle is one
patient's record in every export we know; a multi-GB Bundle would need a streaming JSON parser).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cds._exceptions import InputError

__all__ = ["Item", "Source", "discover", "patient_key", "stream", "stream_source"]

# Where a resource points at its patient (FHIR R4), tried in order.
_PATIENT_FIELDS = ("subject", "patient", "beneficiary")


@dataclass(frozen=True)
class Source:
    """One input file and how to read it."""

    path: Path
    kind: str  # "ndjson" | "bundle"

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


@dataclass
class Item:
    """One resource from the input.

    ``patient_id`` is None for a resource that names no patient (a Medication, or data the export
    did not link to anyone). ``raw`` is the JSON line (UTF-8 bytes) when the input line can be reused.
    ``where`` names the file and line (or entry) for messages.
    """

    patient_id: str | None
    full_url: str | None
    resource: dict[str, Any]
    raw: bytes | None
    where: str
    size: int = 0  # bytes of input this item consumed (progress)


def _bad(message: str) -> InputError:
    return InputError(message)


def _manifest_sources(path: Path, body: dict[str, Any]) -> list[Source]:
    outputs = body.get("output")
    if not isinstance(outputs, list):
        raise _bad(f"{path}: a Bulk Data manifest needs an 'output' list")
    sources = []
    for index, entry in enumerate(outputs):
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url:
            raise _bad(f"{path}: output[{index}].url is missing")
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https"):
            raise _bad(f"{path}: output[{index}].url {url} is remote; download the export first "
                       "(cds screen reads local files only)")
        if parsed.scheme == "file":
            target = Path(unquote(parsed.path))
        elif parsed.scheme:
            raise _bad(f"{path}: output[{index}].url {url}: unsupported URL scheme {parsed.scheme!r}")
        else:
            target = Path(url) if os.path.isabs(url) else path.parent / url
        if not target.is_file():
            raise _bad(f"{path}: output[{index}].url points at {target}, which does not exist")
        sources.append(Source(target, "ndjson"))
    return sources


def discover(input_path: Path) -> list[Source]:
    """The files of INPUT, in a stable order (see the module docstring for the shapes accepted)."""
    if not input_path.exists():
        raise _bad(f"{input_path}: no such file or folder")
    if input_path.is_dir():
        ndjson = sorted(p for p in input_path.iterdir()
                        if p.is_file() and p.name.endswith((".ndjson", ".jsonl")))
        if ndjson:
            return [Source(p, "ndjson") for p in ndjson]
        bundles = sorted(p for p in input_path.iterdir() if p.is_file() and p.suffix == ".json")
        if not bundles:
            raise _bad(f"{input_path}: no .ndjson files (Bulk Data export) and no .json Bundles found")
        return [Source(p, "bundle") for p in bundles]
    if input_path.name.endswith((".ndjson", ".jsonl")):
        return [Source(input_path, "ndjson")]
    body = _load_json_file(input_path)
    if isinstance(body, dict) and "output" in body and body.get("resourceType") is None:
        return _manifest_sources(input_path, body)
    return [Source(input_path, "bundle")]


def _load_json_file(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except OSError as exc:
        raise _bad(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise _bad(f"{path}: line {exc.lineno}: not JSON: {exc.msg} (column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise _bad(f"{path}: not UTF-8 text: {exc.reason}") from None


def _reference_id(reference: str, aliases: dict[str, str]) -> str | None:
    """The patient id a reference string names, or None when it names something else."""
    if reference in aliases:
        return aliases[reference]
    if reference.startswith("urn:uuid:"):
        return reference[len("urn:uuid:"):] or None
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    return None


def patient_key(resource: dict[str, Any], aliases: dict[str, str] | None = None) -> str | None:
    """The id of the patient a resource is about (the Patient's own id for a Patient), or None."""
    aliases = aliases or {}
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for name in _PATIENT_FIELDS:
        ref = resource.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return _reference_id(ref["reference"], aliases)
    return None


def _check_resource(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise _bad(f"{where}: not a FHIR resource (no resourceType)")
    if value["resourceType"] == "Patient" and not (isinstance(value.get("id"), str) and value["id"]):
        raise _bad(f"{where}: Patient without an id (its records could not be linked to it)")
    return value


def _stream_ndjson(source: Source) -> Iterator[Item]:
    path = source.path
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise _bad(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            size = len(line)
            text = line.strip()
            if not text:
                continue
            where = f"{path}:{number}"
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _bad(f"{where}: not JSON: {exc.msg} (column {exc.colno})") from None
            except UnicodeDecodeError as exc:
                raise _bad(f"{where}: not UTF-8 text: {exc.reason}") from None
            resource = _check_resource(value, where)
            if resource["resourceType"] == "Bundle":
                yield from _bundle_items(resource, where, size)
                continue
            yield Item(patient_key(resource), None, resource, text, where, size)


def _flatten(bundle: dict[str, Any], where: str) -> list[tuple[str | None, dict[str, Any], str]]:
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise _bad(f"{where}: Bundle.entry must be a list")
    found: list[tuple[str | None, dict[str, Any], str]] = []
    for index, entry in enumerate(entries):
        at = f"{where} entry[{index}]"
        if not isinstance(entry, dict):
            raise _bad(f"{at}: must be an object")
        resource = entry.get("resource")
        if resource is None:
            continue
        resource = _check_resource(resource, f"{at}.resource")
        if resource["resourceType"] == "Bundle":
            found.extend(_flatten(resource, f"{at}.resource"))
            continue
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        found.append((full_url, resource, at))
    return found


def _bundle_items(bundle: dict[str, Any], where: str, size: int) -> Iterator[Item]:
    entries = _flatten(bundle, where)
    aliases: dict[str, str] = {}
    patients: set[str] = set()
    for full_url, resource, _at in entries:
        if resource["resourceType"] == "Patient":
            patients.add(resource["id"])
            if full_url:
                aliases[full_url] = resource["id"]
    # As in cds evaluate: in a one-patient Bundle a record that names no patient is that patient's.
    only = next(iter(patients)) if len(patients) == 1 else None
    share = size // max(1, len(entries))
    for full_url, resource, at in entries:
        pid = patient_key(resource, aliases)
        if pid is None and resource["resourceType"] != "Medication" and not any(
                isinstance(resource.get(name), dict) for name in _PATIENT_FIELDS):
            pid = only
        yield Item(pid, full_url, resource, None, at, share)


def stream_source(source: Source) -> Iterator[Item]:
    """Every resource of one input file."""
    if source.kind == "ndjson":
        yield from _stream_ndjson(source)
        return
    body = _load_json_file(source.path)
    where = str(source.path)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise _bad(f"{where}: expected a FHIR Bundle, found {kind or 'JSON without resourceType'}")
    yield from _bundle_items(body, where, source.size)


def stream(sources: list[Source]) -> Iterator[Item]:
    """Every resource of every input file, in file order."""
    for source in sources:
        yield from stream_source(source)
