"""``cds screen --engine spark``: the same per-patient core on Apache Spark (PySpark, optional extra).

When a population outgrows one machine the screen runs on Spark (``--master local[*]`` by default, or
any cluster URL). Nothing clinical happens here: every patient still goes through
:func:`cds.screen.core.screen_batch` (the local workers' handler: ingest -> facts -> engine -> cards),
so a patient's rows are the rows the local engine and ``cds evaluate`` give. What Spark does:

1. **Read**: the input files (:func:`cds.screen.ingest.discover`) are distributed and each one is
   streamed by :func:`cds.screen.ingest.stream_source` in an executor, so NDJSON, manifests and Bundle
   folders are read by the same code (and fail with the same file:line messages) as locally.
   Medication resources belong to no patient: NDJSON files of Medications (Bulk Data writes one type per
   file) are read on the driver and broadcast; Medications inside a Bundle go with that Bundle's patients.
2. **Key by patient and repartition by patient**: each resource becomes ``(patient id, (file, line,
   kind, fullUrl, JSON line as bytes))``; ``groupByKey`` hash-partitions by patient into ``partitions`` parts.
   Resources of types no rule reads only carry their date (for ``data_through``).
3. **Evaluate a partition at a time**: one :class:`cds.engine.Engine` per executor Python process,
   compiled once from the broadcast pickled RuleSet and kept for the process's later tasks
   (durable_rules: one ruleset per process; the engine deletes each patient's state after its pass,
   as in the service). Stage 1 (:class:`cds.screen.prefilter.Prefilter`: the classes of record of the
   patient's resources against every card's normal form) sets patients aside before the full
   evaluation, exactly as locally. A patient's resources are put back in input order.
4. **Collect** the worklist rows (one per card: small) and per-partition counts on the driver, which
   writes the same outputs as the local engine (:mod:`cds.screen.outputs`).

On a cluster the input files must be visible to every executor at the same path (a shared mount):
they are opened by path, not read through Hadoop file systems.

The Spark session is created for the run and stopped after it, so that executor processes never
hold the engines of two rulesets (``cds rules impact`` screens twice).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from cds._exceptions import CDSError, InputError
from cds.fhir.dates import parse_now
from cds.fhir.ingest import RELEVANT_TYPES
from cds.rules.model import RuleSet
from cds.screen.core import BatchResult, PatientData, record_date, screen_batch
from cds.screen.ingest import Source, discover, stream_source
from cds.screen.progress import NullProgress, Progress
from cds.screen.result import EngineRun, PatientError

__all__ = ["DEFAULT_MASTER", "run_spark"]

DEFAULT_MASTER = "local[*]"
_KEPT_TYPES = frozenset(RELEVANT_TYPES - {"Medication"})
_MED_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")
_STATS = ""  # the key of per-file counts (a patient id is never empty)
_BATCH = 64  # patients per screen_batch call inside a task

# Executor-process state: the one engine of this process, by ruleset digest.
_ENGINE: dict[str, tuple[Any, Any]] = {}


def _engine_for(blob: bytes, digest: str, include_drafts: bool) -> tuple[Any, Any]:
    """The process's engine and first pass, compiled on first use (like a worker process)."""
    cached = _ENGINE.get(digest)
    if cached is None:
        from cds.engine import Engine
        from cds.screen.prefilter import Prefilter

        ruleset = pickle.loads(blob)
        if ruleset.digest != digest:
            raise RuntimeError(f"ruleset digest {ruleset.digest} is not the one broadcast ({digest})")
        _ENGINE.clear()  # one ruleset per process
        cached = _ENGINE[digest] = (Engine(ruleset, include_drafts=include_drafts),
                                    Prefilter(ruleset, include_drafts=include_drafts))
    return cached


def _first_type(source: Source) -> str | None:
    """The resourceType of an NDJSON file's first resource (Bulk Data: one type per file)."""
    with source.path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    value = json.loads(line)
                except ValueError:
                    return None  # the executor reading it reports the line
                return value.get("resourceType") if isinstance(value, dict) else None
    return None


def _read_source(indexed: tuple[int, Source]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Executor: one input file -> (patient id, record) pairs plus one (_STATS, counts) pair."""
    index, source = indexed
    by_type: Counter[str] = Counter()
    unattributed: Counter[str] = Counter()
    bundle_meds: list[tuple[int, str | None, bytes]] = []
    pids: set[str] = set()
    for number, item in enumerate(stream_source(source)):
        resource = item.resource
        rtype = resource["resourceType"]
        by_type[rtype] += 1
        if rtype == "Medication":
            if source.kind == "ndjson":
                raise InputError(f"{item.where}: a Medication in an NDJSON file of other resources; the Spark "
                                 "engine reads Medications from their own files (Bulk Data writes one type per "
                                 "file): use --engine local for this input")
            bundle_meds.append((number, item.full_url, json.dumps(resource, separators=(",", ":")).encode()))
            continue
        pid = item.patient_id
        if pid is None:
            unattributed[rtype] += 1
            continue
        pids.add(pid)
        if rtype in _KEPT_TYPES:
            text = item.raw if item.raw is not None else json.dumps(resource, separators=(",", ":")).encode()
            yield pid, (index, number, "r", item.full_url, text)
        else:
            yield pid, (index, number, "d", None, record_date(resource))
    for pid in sorted(pids):
        for number, full_url, text in bundle_meds:
            yield pid, (index, number, "m", full_url, text)
    yield _STATS, (index, 0, "s", None, (dict(by_type), dict(unattributed)))


def _patient(pid: str, records: Iterable[tuple[Any, ...]],
             medications: dict[str, tuple[str | None, bytes]]) -> PatientData:
    """Records of one patient -> PatientData, resources in input order, referenced Medications last."""
    ordered = sorted(records, key=lambda r: (r[0], r[1]))
    entries: list[tuple[str | None, dict[str, Any]]] = []
    local_meds: dict[str, tuple[str | None, bytes]] = {}
    latest: str | None = None
    for _index, _number, kind, full_url, payload in ordered:
        if kind == "m":
            resource = json.loads(payload)
            local_meds[f"Medication/{resource.get('id')}"] = (full_url, payload)
            if full_url:
                local_meds[full_url] = (full_url, payload)
            continue
        if kind == "r":
            resource = json.loads(payload)
            entries.append((full_url, resource))
            when = record_date(resource)
        else:
            when = payload
        if when is not None and (latest is None or when > latest):
            latest = when
    # Referenced Medications are appended after the patient's own resources, once each (as locally).
    added: set[bytes] = set()
    for _url, resource in list(entries):
        if resource.get("resourceType") in _MED_TYPES:
            ref = resource.get("medicationReference")
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                found = medications.get(ref["reference"]) or local_meds.get(ref["reference"])
                if found is not None and found[1] not in added:
                    added.add(found[1])
                    entries.append((found[0], json.loads(found[1])))
    return PatientData(pid, entries, latest)


def _evaluate_partition(groups: Iterator[tuple[str, Iterable[tuple[Any, ...]]]], blob: bytes, digest: str,
                        include_drafts: bool, now: str,
                        medications: dict[str, tuple[str | None, bytes]]) -> Iterator[tuple[str, Any]]:
    """Executor: one partition of patients -> ("result", BatchResult) and one ("stats", counts)."""
    engine, prefilter = _engine_for(blob, digest, include_drafts)
    patients = selected = 0
    files: list[tuple[dict[str, int], dict[str, int]]] = []
    batch: list[PatientData] = []
    for pid, records in groups:
        if pid == _STATS:
            files.extend(record[4] for record in records)
            continue
        patients += 1
        data = _patient(pid, records, medications)
        if not prefilter.selects_everyone:
            classes: set[str] = set()
            for _url, resource in data.entries:
                if resource.get("resourceType") in _KEPT_TYPES:
                    classes |= prefilter.classes(resource)
            if not prefilter.selects(classes):
                continue
        selected += 1
        batch.append(data)
        if len(batch) >= _BATCH:
            for result in screen_batch(engine, {"patients": batch}, None, now):
                yield "result", result
            batch = []
    if batch:
        for result in screen_batch(engine, {"patients": batch}, None, now):
            yield "result", result
    yield "stats", {"patients": patients, "selected": selected, "files": files, "pid": os.getpid()}


def _session(master: str) -> Any:
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError as exc:  # the optional extra is not installed
        if exc.name and exc.name.split(".")[0] in ("pyspark", "py4j"):
            raise CDSError("--engine spark needs PySpark: pip install 'sir-cds[spark]'") from None
        raise

    # Executors run this interpreter (the one with cds installed), not whatever "python3" is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return (SparkSession.builder.master(master).appName("cds-screen")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.python.worker.reuse", "true")
            .config("spark.pyspark.python", sys.executable)
            .config("spark.driver.memory", os.environ.get("CDS_SPARK_DRIVER_MEMORY", "1g"))
            .getOrCreate())


def _driver_medications(sources: list[Source]) -> tuple[list[Source], dict[str, tuple[str | None, bytes]], Counter[str]]:
    """Split off NDJSON files of Medications, read them here (they are few) for broadcasting."""
    rest: list[Source] = []
    medications: dict[str, tuple[str | None, bytes]] = {}
    counts: Counter[str] = Counter()
    for source in sources:
        if source.kind != "ndjson" or _first_type(source) != "Medication":
            rest.append(source)
            continue
        for item in stream_source(source):
            rtype = item.resource["resourceType"]
            counts[rtype] += 1
            if rtype != "Medication":
                raise InputError(f"{item.where}: a {rtype} in a file of Medications; the Spark engine reads "
                                 "Medications from their own files: use --engine local for this input")
            text = item.raw or json.dumps(item.resource, separators=(",", ":")).encode()
            rid = item.resource.get("id")
            if isinstance(rid, str) and rid:
                medications[f"Medication/{rid}"] = (item.full_url, text)
            if item.full_url:
                medications[item.full_url] = (item.full_url, text)
    return rest, medications, counts


def run_spark(input_path: Path, *, now: datetime | str | None, ruleset: RuleSet, workers: int | None = None,
              master: str | None = None, include_drafts: bool = False, progress: Progress | None = None,
              partitions: int | None = None) -> EngineRun:
    """Screen INPUT on Spark (see the module docstring); the same :class:`EngineRun` as the local engine.

    ``master`` defaults to ``local[*]`` (``local[N]`` when ``workers`` is given and no master is);
    ``partitions`` (patients are hash-partitioned into that many parts) defaults to
    ``CDS_SPARK_PARTITIONS`` or 4 per core of the master.
    """
    progress = progress or NullProgress()
    instant = parse_now(now).isoformat()
    started = time.perf_counter()
    sources = discover(input_path)
    rest, medications, med_counts = _driver_medications(sources)
    chosen_master = master or (f"local[{workers}]" if workers else DEFAULT_MASTER)
    spark = _session(chosen_master)
    t_session = time.perf_counter()
    try:
        sc = spark.sparkContext
        sc.setLogLevel(os.environ.get("CDS_SPARK_LOG_LEVEL", "ERROR"))
        cores = sc.defaultParallelism
        parts = partitions or int(os.environ.get("CDS_SPARK_PARTITIONS", 0)) or max(2, 4 * cores)
        blob = sc.broadcast(pickle.dumps(ruleset, protocol=pickle.HIGHEST_PROTOCOL))
        meds = sc.broadcast(medications)
        digest = ruleset.digest
        progress.start("spark", len(rest))
        keyed = sc.parallelize(list(enumerate(rest)), max(1, len(rest))).flatMap(_read_source)
        grouped = keyed.groupByKey(numPartitions=parts)
        out = grouped.mapPartitions(
            lambda groups: _evaluate_partition(groups, blob.value, digest, include_drafts, instant, meds.value)
        ).collect()
        progress.finish()
    finally:
        spark.stop()
    t_done = time.perf_counter()
    return _assemble(out, med_counts, medications, parts, chosen_master, sources,
                     {"spark_start": round(t_session - started, 3), "evaluate": round(t_done - t_session, 3)})


def _assemble(out: list[tuple[str, Any]], med_counts: Counter[str], medications: dict[str, Any], parts: int,
              master: str, sources: list[Source], stages: dict[str, float]) -> EngineRun:
    rows = []
    errors = []
    patients = selected = 0
    by_type: Counter[str] = Counter(med_counts)
    unattributed: Counter[str] = Counter()
    pids: set[int] = set()
    evaluated = 0
    for kind, value in out:
        if kind == "result":
            result: BatchResult = value
            evaluated += 1
            rows.extend(result.rows)
            if result.error is not None:
                errors.append(PatientError(result.patient_id, result.error_kind or "engine", result.error))
        else:
            patients += value["patients"]
            selected += value["selected"]
            pids.add(value["pid"])
            for types, unlinked in value["files"]:
                by_type.update(types)
                unattributed.update(unlinked)
    return EngineRun(
        rows=rows, patients=patients, resources=sum(by_type.values()), selected=selected, errors=errors,
        stages_s=stages,
        details={"master": master, "partitions": parts, "executor_processes": len(pids), "files": len(sources),
                 "input_bytes": sum(s.size for s in sources),
                 "resources_by_type": dict(sorted(by_type.items())),
                 "unattributed_resources": dict(sorted(unattributed.items())),
                 "medications": sum(1 for key in medications if key.startswith("Medication/")),
                 "stage1": {"selected": selected, "dropped": patients - selected},
                 "evaluated": evaluated},
    )
