"""``--engine local``: screen on this machine with the engine worker processes.

Pass 1 streams the input into bucket files and runs stage 1 (:mod:`cds.screen.buckets`); pass 2 reads
one bucket at a time and sends the selected patients in batches to a
:class:`cds.workers.WorkerPool` whose workers run :func:`cds.screen.core.screen_batch`
(``WorkerSpec.handler``): the same supervised processes the service uses, so durable_rules runs one
ruleset per process with per-patient state deleted, and a worker that crashes is replaced.

Batches (``batch_size`` patients per message) keep the per-call cost (pickling, pipe, supervising
thread) small next to the ~10-20 ms evaluation of a patient; at most ``2 x workers`` batches are in
flight, so memory stays bounded whatever the population. A batch that fails as a whole (a worker
crash or deadline) is retried patient by patient so that only the patient at fault is reported,
with its error, in the run's ``errors``.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any

from cds._exceptions import EngineError
from cds.fhir.dates import parse_now
from cds.rules.model import RuleSet
from cds.screen.buckets import partition
from cds.screen.core import HANDLER, BatchResult, PatientData
from cds.screen.ingest import discover
from cds.screen.prefilter import Prefilter
from cds.screen.progress import NullProgress, Progress
from cds.screen.result import EngineRun, PatientError
from cds.workers import WorkerFailure, WorkerPool, default_worker_count
from cds.workers.pool import WorkerSpec

__all__ = ["run_local"]

BATCH_SIZE = 32
BATCH_TIMEOUT_S = 300.0  # per batch on a busy machine; a single patient that hangs is killed by it


def _batches(patients: Iterator[PatientData], size: int) -> Iterator[list[PatientData]]:
    batch: list[PatientData] = []
    for patient in patients:
        batch.append(patient)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Evaluator:
    """Feeds batches to the pool with bounded in-flight work and collects rows and errors."""

    def __init__(self, pool: WorkerPool, now: str, in_flight: int, progress: Progress) -> None:
        self.pool = pool
        self.now = now
        self.in_flight = in_flight
        self.progress = progress
        self.rows: list[Any] = []
        self.errors: list[PatientError] = []
        self.evaluated = 0

    def _submit(self, batch: list[PatientData]) -> Future[Any]:
        return self.pool.submit({"patients": batch}, "patient-view", self.now, label=f"screen:{batch[0].patient_id}")

    def _collect(self, batch: list[PatientData], future: Future[Any]) -> None:
        try:
            results: list[BatchResult] = future.result()
        except (WorkerFailure, EngineError) as exc:
            if len(batch) == 1:
                self.errors.append(PatientError(batch[0].patient_id, "engine", f"{type(exc).__name__}: {exc}"))
                self.evaluated += 1
                self.progress.advance(1)
                return
            for patient in batch:  # find the patient at fault; the others are evaluated again
                self._collect([patient], self._submit([patient]))
            return
        for result in results:
            self.rows.extend(result.rows)
            if result.error is not None:
                self.errors.append(PatientError(result.patient_id, result.error_kind or "engine", result.error))
        self.evaluated += len(results)
        self.progress.advance(len(results))

    def run(self, batches: Iterator[list[PatientData]]) -> None:
        pending: deque[tuple[list[PatientData], Future[Any]]] = deque()
        for batch in batches:
            pending.append((batch, self._submit(batch)))
            while len(pending) >= self.in_flight:
                self._collect(*pending.popleft())
        while pending:
            self._collect(*pending.popleft())


def run_local(input_path: Path, *, now: datetime | str | None, ruleset: RuleSet, workers: int | None = None,
              include_drafts: bool = False, progress: Progress | None = None, batch_size: int = BATCH_SIZE,
              workdir: Path | None = None, buckets: int | None = None) -> EngineRun:
    """Screen INPUT with ``workers`` engine processes (default: one per core); see the module docstring."""
    progress = progress or NullProgress()
    instant = parse_now(now).isoformat()
    size = workers or default_worker_count()
    started = time.perf_counter()
    sources = discover(input_path)
    prefilter = Prefilter(ruleset, include_drafts=include_drafts)  # draft rules widen stage 1 too
    spec = WorkerSpec(pickle.dumps(ruleset, protocol=pickle.HIGHEST_PROTOCOL), ruleset.digest, include_drafts,
                      handler=HANDLER)
    # Start the workers first: they compile while pass 1 streams the input.
    pool = WorkerPool(spec, size=size, timeout_s=BATCH_TIMEOUT_S, max_pending=4 * size + 4).start()
    try:
        with tempfile.TemporaryDirectory(prefix="cds-screen-", dir=workdir) as tmp:
            progress.start("reading", sum(source.size for source in sources))
            part = partition(sources, prefilter, Path(tmp), buckets=buckets, progress=progress.advance)
            progress.finish()
            t_partition = time.perf_counter()
            if not pool.wait_ready(timeout=pool.start_timeout_s):
                raise EngineError(f"the engine workers did not start within {pool.start_timeout_s:g} s")
            t_ready = time.perf_counter()
            evaluator = _Evaluator(pool, instant, in_flight=2 * size, progress=progress)
            progress.start("evaluating", len(part.selected))
            evaluator.run(_batches(part.iter_patients(), batch_size))
            progress.finish()
            t_done = time.perf_counter()
    except BaseException:
        pool.close(graceful=False)  # Ctrl-C or bad input: stop the workers now
        raise
    pool.close(graceful=True, timeout=10.0)
    return EngineRun(
        rows=evaluator.rows, patients=part.patients, resources=part.resources, selected=len(part.selected),
        errors=evaluator.errors,
        stages_s={"partition": round(t_partition - started, 3), "workers_ready_wait": round(t_ready - t_partition, 3),
                  "evaluate": round(t_done - t_ready, 3)},
        details={"files": len(sources), "input_bytes": part.input_bytes, "buckets": part.buckets,
                 "resources_by_type": dict(sorted(part.by_type.items())),
                 "unattributed_resources": dict(sorted(part.unattributed.items())),
                 "medications": sum(1 for key in part.medications if key.startswith("Medication/")),
                 "stage1": {"selected": len(part.selected), "dropped": part.dropped, **prefilter.describe()},
                 "batch_size": batch_size, "evaluated": evaluator.evaluated},
    )
