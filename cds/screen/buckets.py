"""Group a streamed population by patient in bounded memory: hash-partitioned bucket files on disk.

Pass 1 (:func:`partition`) streams the input once (:mod:`cds.screen.ingest`) and appends each
resource the rules could use (the types the fact builders read, and the Patient) to bucket file
``hash(patient id) % n`` as one line ``patient id TAB fullUrl TAB compact JSON``. At the same time it
runs stage 1 (:class:`cds.screen.prefilter.Prefilter`) on each resource (the classes of record a
patient has; decided per patient at the end) and notes every patient's latest record date. Pass 2
reads one bucket at a time, groups its lines by patient and yields the stage-1-selected patients as
:class:`cds.screen.core.PatientData` (:meth:`Partition.iter_patients`).

Memory: one bucket's resources (the bucket count is chosen so a bucket is about ``bucket_bytes``),
plus per patient an id, a date and the set of value-set ids their records matched (a few hundred
bytes: tens of MB per 100,000 patients), plus the Medication
resources of the export (patient-independent and referenced from many patients; a few thousand in
real exports). Resources of types no rule reads (Encounter, Claim...) are counted and dated but never
written.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cds._exceptions import InputError
from cds.fhir.ingest import RELEVANT_TYPES
from cds.screen.core import PatientData, record_date
from cds.screen.ingest import Source, stream
from cds.screen.prefilter import Prefilter

__all__ = ["DEFAULT_BUCKET_BYTES", "Partition", "bucket_of", "partition"]

DEFAULT_BUCKET_BYTES = 48 * 1024 * 1024
_KEPT_TYPES = frozenset(RELEVANT_TYPES - {"Medication"})
_MED_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")

Progress = Callable[[int], None]


def bucket_of(patient_id: str, buckets: int) -> int:
    """Stable across processes and runs (``hash()`` of a str is salted per process)."""
    return zlib.crc32(patient_id.encode("utf-8")) % buckets


@dataclass
class Partition:
    """The result of pass 1: bucket files plus what was learnt while streaming."""

    directory: Path
    buckets: int
    resources: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    unattributed: Counter[str] = field(default_factory=Counter)  # resources that name no patient, by type
    data_through: dict[str, str | None] = field(default_factory=dict)  # every patient seen -> latest date
    selected: set[str] = field(default_factory=set)  # stage 1: patients some card could fire for
    medications: dict[str, tuple[str | None, dict[str, Any]]] = field(default_factory=dict)
    input_bytes: int = 0

    @property
    def patients(self) -> int:
        return len(self.data_through)

    @property
    def dropped(self) -> int:
        return len(self.data_through) - len(self.selected)

    def bucket_path(self, index: int) -> Path:
        return self.directory / f"bucket-{index:04d}.tsv"

    def _with_medications(self, entries: list[tuple[str | None, dict[str, Any]]]) -> None:
        wanted: list[str] = []
        for _url, resource in entries:
            if resource.get("resourceType") in _MED_TYPES:
                ref = resource.get("medicationReference")
                if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                    wanted.append(ref["reference"])
        added: set[int] = set()
        for ref in wanted:
            found = self.medications.get(ref)
            if found is not None and id(found[1]) not in added:
                added.add(id(found[1]))
                entries.append(found)

    def patients_in_bucket(self, index: int, *, selected_only: bool = True) -> Iterator[PatientData]:
        """The patients of one bucket, in first-seen order (stage-1-selected ones unless told otherwise)."""
        grouped: dict[str, list[tuple[str | None, dict[str, Any]]]] = {}
        path = self.bucket_path(index)
        if not path.exists():
            return
        with path.open("rb") as handle:
            for line in handle:
                raw_pid, raw_url, text = line.rstrip(b"\n").split(b"\t", 2)
                pid = raw_pid.decode("utf-8")
                if selected_only and pid not in self.selected:
                    continue
                grouped.setdefault(pid, []).append((raw_url.decode("utf-8") or None, json.loads(text)))
        for pid, entries in grouped.items():
            self._with_medications(entries)
            yield PatientData(pid, entries, self.data_through.get(pid))

    def iter_patients(self, *, selected_only: bool = True) -> Iterator[PatientData]:
        """Every (selected) patient, one bucket in memory at a time."""
        for index in range(self.buckets):
            yield from self.patients_in_bucket(index, selected_only=selected_only)


def _choose_buckets(sources: list[Source], bucket_bytes: int) -> int:
    total = sum(source.size for source in sources)
    return max(1, min(512, -(-total // max(1, bucket_bytes))))


def partition(sources: list[Source], prefilter: Prefilter, directory: Path, *, buckets: int | None = None,
              bucket_bytes: int = DEFAULT_BUCKET_BYTES, progress: Progress | None = None) -> Partition:
    """Pass 1: stream ``sources`` into bucket files under ``directory`` (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    count = buckets or _choose_buckets(sources, bucket_bytes)
    result = Partition(directory=directory, buckets=count, input_bytes=sum(s.size for s in sources))
    handles: dict[int, IO[bytes]] = {}
    seen = result.data_through
    classes: dict[str, set[str]] = {}  # stage 1: what each patient's records could feed
    try:
        for item in stream(sources):
            resource = item.resource
            rtype = resource["resourceType"]
            result.resources += 1
            result.by_type[rtype] += 1
            if progress is not None and item.size:
                progress(item.size)
            if rtype == "Medication":
                rid = resource.get("id")
                if isinstance(rid, str) and rid:
                    result.medications[f"Medication/{rid}"] = (item.full_url, resource)
                if item.full_url:
                    result.medications[item.full_url] = (item.full_url, resource)
                continue
            pid = item.patient_id
            if pid is None:
                result.unattributed[rtype] += 1
                continue
            if "\t" in pid or "\n" in pid:
                raise InputError(f"{item.where}: patient id {pid!r} contains a tab or newline")
            when = record_date(resource)
            previous = seen.get(pid)
            if pid not in seen or (when is not None and (previous is None or when > previous)):
                seen[pid] = when if when is not None else previous
            if rtype not in _KEPT_TYPES:
                continue
            found = prefilter.classes(resource)
            if found:
                known = classes.get(pid)
                if known is None:
                    classes[pid] = set(found)
                elif not found <= known:
                    known |= found
            index = bucket_of(pid, count)
            handle = handles.get(index)
            if handle is None:
                handle = handles[index] = result.bucket_path(index).open("ab")
            raw = item.raw if item.raw is not None else json.dumps(resource, separators=(",", ":")).encode()
            handle.write(b"%s\t%s\t%s\n" % (pid.encode("utf-8"), (item.full_url or "").encode("utf-8"), raw))
    finally:
        for handle in handles.values():
            handle.close()
    if prefilter.selects_everyone:
        result.selected = set(seen)
    else:
        result.selected = {pid for pid, found in classes.items() if prefilter.selects(found)}
    return result
