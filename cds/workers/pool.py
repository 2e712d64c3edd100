"""A supervised pool of engine worker processes with per-call deadlines and a crash quarantine.

Design, and why:

* **Processes, spawn context.** durable_rules holds the GIL and crashes now and then; each worker is a
  single-threaded process started with ``spawn`` (forking a process that runs uvicorn's threads is
  unsafe). ``concurrent.futures.ProcessPoolExecutor`` is not used: one dead worker breaks that whole
  pool and every pending call.
* **One supervising thread and one pipe per worker.** A slot thread takes the next call from the
  shared queue only while its worker is alive and compiled, sends it, then waits on the pipe *and*
  the process sentinel with the per-call deadline (``timeout_s``). So a death (SIGSEGV, SIGKILL, OOM
  kill) is seen at once and fails only the call that worker held (:class:`WorkerCrashed`); a hang
  past the deadline is killed (:class:`WorkerTimeout`). The slot then starts a replacement; calls on
  other workers are unaffected and queued calls wait for a live worker. Idle workers are checked
  every 0.25 s, so one killed while idle is replaced as quickly.
* **Start-up never blocks.** :meth:`WorkerPool.start` returns at once; every slot starts its worker
  in parallel, and calls simply wait in the queue until a worker is ready.
* **Quarantine.** A payload (hash of the pickled request without hookInstance or token, plus the
  ruleset digest) that has taken down ``quarantine_after`` workers (crash or deadline) within
  ``quarantine_s`` is answered at once with the same error class, touching no worker: an EHR retrying
  a poisonous request cannot crash-loop the service.
* **Bounded.** At most ``max_pending`` calls (queued + running) are accepted; beyond that
  :class:`PoolBusy`. The enqueue and start times of each call are kept so that a queue deadline can be
  enforced by the caller later.
* **Counted.** Starts, restarts, crashes, timeouts, quarantined calls are counted in a
  :class:`PoolMetrics` that may be shared by successive pools of one service (reloads), and logged.
* **Retire without dropping calls.** :meth:`WorkerPool.close` with ``graceful=True`` lets queued and
  running calls finish, then stops the workers by closing their pipes: that is how a reload retires
  the previous ruleset's pool after the new one is warm.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from cds._exceptions import EngineError, InputError, InvalidRequestError, InvalidResourceError, NotJSONError
from cds.workers.errors import PoolBusy, PoolClosed, WorkerCrashed, WorkerFailure, WorkerTimeout

__all__ = ["PoolMetrics", "Quarantine", "WorkerPool", "WorkerSpec", "default_worker_count", "encode_request"]

log = logging.getLogger("cds.workers")

_STOP = object()
_INPUT_ERRORS: dict[str, type[InputError]] = {c.__name__: c for c in (InputError, NotJSONError, InvalidRequestError)}
_POOL_IDS = itertools.count(1)


def default_worker_count() -> int:
    """One worker per core the process may use (``CDS_ENGINE_WORKERS`` overrides)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def encode_request(payload: dict[str, Any], hook: str | None, now: str | None = None) -> tuple[bytes, str]:
    """(message for a worker, content hash for the quarantine). Per-call identifiers are left out.

    ``now`` (ISO 8601) fixes the evaluation instant (rule tests, tools); the service leaves it None.
    """
    body = {k: v for k, v in payload.items() if k not in ("hookInstance", "fhirAuthorization")}
    message = pickle.dumps((hook, body, now), protocol=pickle.HIGHEST_PROTOCOL)
    return message, hashlib.blake2b(message, digest_size=16).hexdigest()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker of one pool compiles: the pickled RuleSet, its digest, drafts or not."""

    ruleset_blob: bytes
    digest: str
    include_drafts: bool = False
    #: ``"module:function"`` the worker calls as ``function(engine, payload, hook, now)`` instead of
    #: ``engine.evaluate(...).summary()`` (population screening sends batches of patients and wants
    #: worklist rows back). Named by string so that this package never imports its callers.
    handler: str | None = None


class PoolMetrics:
    """Thread-safe counters of the engine workers of one service (shared across reloads)."""

    FIELDS = ("started", "restarts", "crashes", "timeouts", "start_failures", "quarantined_calls", "calls",
              "engine_errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.FIELDS, 0)

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._values[name]


class Quarantine:
    """Payload keys that took workers down; quarantined after ``after`` losses for ``seconds``."""

    def __init__(self, *, after: int = 2, seconds: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = max(1, after)
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._losses: dict[str, list[float]] = {}
        self._until: dict[str, tuple[float, type[WorkerFailure]]] = {}

    def check(self, key: str) -> type[WorkerFailure] | None:
        """The error class to answer with if ``key`` is quarantined now, else None."""
        now = self._clock()
        with self._lock:
            entry = self._until.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._until[key]
                self._losses.pop(key, None)
                return None
            return entry[1]

    def record(self, key: str, kind: type[WorkerFailure]) -> bool:
        """Count one worker lost to ``key``; True when this puts it in quarantine."""
        now = self._clock()
        with self._lock:
            recent = [t for t in self._losses.get(key, []) if now - t < self.seconds] + [now]
            self._losses[key] = recent
            if len(recent) >= self.after:
                self._until[key] = (now + self.seconds, kind)
                return True
            if len(self._losses) > 10_000:  # bounded memory under a flood of distinct crashers
                self._losses = {k: v for k, v in self._losses.items() if now - v[-1] < self.seconds}
            return False

    def __len__(self) -> int:
        now = self._clock()
        with self._lock:
            return sum(1 for until, _ in self._until.values() if until > now)


@dataclass
class _Job:
    message: bytes
    key: str
    future: Future[Any]
    label: str | None = None  # the caller's name for the call (the service: its hookInstance), for logs
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None


class _WorkerStartError(Exception):
    pass


class _Slot:
    """One worker process and the thread that feeds and supervises it."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.ready = False
        self.busy = False
        self.busy_since: float | None = None
        self.current_label: str | None = None
        self.generation = 0
        self.thread = threading.Thread(target=self._run, name=f"cds-engine-slot-{pool.id}.{index}", daemon=True)

    @property
    def pid(self) -> int | None:
        process = self.process  # read once: the slot thread may replace it meanwhile
        return process.pid if process is not None and self.ready else None

    def alive(self) -> bool:
        """Compiled and running (read from any thread)."""
        process = self.process
        return self.ready and process is not None and process.is_alive()

    # -- lifecycle -----------------------------------------------------------------------------
    def _run(self) -> None:
        pool = self.pool
        try:
            while self._ensure_worker():
                try:
                    job = pool._jobs.get(timeout=0.25)
                except queue.Empty:
                    continue
                if job is _STOP:
                    break
                if not job.future.running() and not job.future.set_running_or_notify_cancel():
                    continue  # the caller gave up while it was queued (a requeued call is running already)
                self.busy, self.busy_since, self.current_label = True, time.monotonic(), job.label
                try:
                    self._serve(job)
                finally:
                    self.busy, self.busy_since, self.current_label = False, None, None
        except Exception:  # pragma: no cover - a bug here must not leave the slot silently dead
            log.exception("engine worker slot %s.%d failed", pool.id, self.index)
        finally:
            self._stop_worker()

    def _ensure_worker(self) -> bool:
        """A live, compiled worker (starting one if needed); False when the pool is stopping."""
        pool = self.pool
        backoff = 0.5
        while not pool._stopping.is_set():
            if self.process is not None and self.process.is_alive() and self.ready:
                return True
            if self.process is not None:
                code = self._reap()
                pool.metrics.inc("crashes")
                log.warning("engine worker %s.%d exited while idle (%s): replacing it", pool.id, self.index,
                            _describe_exit(code))
            try:
                self._start()
                return True
            except _WorkerStartError as exc:
                if pool._stopping.is_set():  # killed by close(graceful=False) while starting: not a failure
                    self._reap()
                    return False
                pool.metrics.inc("start_failures")
                log.error("engine worker %s.%d could not start: %s (retrying in %.1f s)", pool.id, self.index,
                          exc, backoff)
                self._reap()
                if pool._stopping.wait(backoff):
                    return False
                backoff = min(backoff * 2, 10.0)
        return False

    def _start(self) -> None:
        from cds.workers.worker import worker_main

        pool = self.pool
        parent, child = pool._ctx.Pipe(duplex=True)
        process = pool._ctx.Process(target=worker_main, args=(child, self.index), daemon=True,
                                    name=f"cds-engine-{pool.id}.{self.index}")
        process.start()
        child.close()
        self.process, self.conn, self.ready = process, parent, False
        try:
            parent.send((pool.spec.ruleset_blob, pool.spec.digest, pool.spec.include_drafts, pool.spec.handler))
            ready = wait([parent, process.sentinel], timeout=pool.start_timeout_s)
            if parent not in ready:
                raise _WorkerStartError("no answer in time" if not ready else f"died ({_describe_exit(process.exitcode)})")
            reply = parent.recv()
        except (EOFError, OSError) as exc:
            process.join(1)
            raise _WorkerStartError(f"died ({_describe_exit(process.exitcode)}): {type(exc).__name__}") from None
        if reply[0] != "ready":
            raise _WorkerStartError(str(reply[1]))
        self.ready = True
        self.generation += 1
        started = pool.metrics["started"]
        pool.metrics.inc("started")
        if self.generation > 1:
            pool.metrics.inc("restarts")
            log.warning("engine worker %s.%d replaced: pid %d serving again", pool.id, self.index, process.pid)
        else:
            log.info("engine worker %s.%d ready: pid %d (#%d)", pool.id, self.index, process.pid, started + 1)
        pool._ready_changed()

    def _reap(self) -> int | None:
        process, conn = self.process, self.conn
        self.process, self.conn, self.ready = None, None, False
        if conn is not None:
            conn.close()
        code = None
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(5)
            code = process.exitcode
        self.pool._ready_changed()
        return code

    def _stop_worker(self) -> None:
        """Stop politely: closing the pipe makes the worker's recv() end; kill if it lingers."""
        process, conn = self.process, self.conn
        self.process, self.conn, self.ready = None, None, False
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(2)
            if process.is_alive():
                process.kill()
                process.join(2)
        self.pool._ready_changed()

    # -- one call ------------------------------------------------------------------------------
    def _serve(self, job: _Job) -> None:
        pool = self.pool
        conn, process = self.conn, self.process
        assert conn is not None and process is not None
        job.started = time.monotonic()
        try:
            conn.send_bytes(job.message)
        except OSError:
            # The worker died between the liveness check and the send: not this payload's doing.
            # Put the call back at the front of the line (another worker or the replacement takes it).
            self._requeue(job)
            return
        ready = wait([conn, process.sentinel], timeout=pool.timeout_s)
        reply = None
        if conn in ready:
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                reply = None
        if reply is not None:
            self._deliver(job, reply)
            return
        if pool._stopping.is_set():
            job.future.set_exception(PoolClosed("the engine pool stopped during the call"))
            return
        if not ready:  # the deadline passed: kill and replace
            pid = process.pid
            self._reap()
            pool.metrics.inc("timeouts")
            error: type[WorkerFailure] = WorkerTimeout
            message = f"the engine did not answer within {pool.timeout_s:g} s"
            log.error("engine worker %s.%d (pid %s) exceeded the %g s deadline on call %s (payload %s): killed, "
                      "replacing it", pool.id, self.index, pid, pool.timeout_s, job.label, job.key[-12:])
        else:
            pid = process.pid
            code = self._reap()
            pool.metrics.inc("crashes")
            error = WorkerCrashed
            message = f"the engine worker died ({_describe_exit(code)})"
            log.error("engine worker %s.%d (pid %s) died (%s) on call %s (payload %s): replacing it", pool.id,
                      self.index, pid, _describe_exit(code), job.label, job.key[-12:])
        if pool.quarantine.record(job.key, error):
            log.error("payload %s took down %d engine workers: quarantined for %g s", job.key[-12:],
                      pool.quarantine.after, pool.quarantine.seconds)
        job.future.set_exception(error(message))

    def _requeue(self, job: _Job) -> None:
        self._reap()
        job.started = None
        with self.pool._jobs.mutex:  # front of the queue: it already waited its turn
            self.pool._jobs.queue.appendleft(job)
            self.pool._jobs.not_empty.notify()
        # the future is already "running"; it stays so until a worker answers

    def _deliver(self, job: _Job, reply: tuple[Any, ...]) -> None:
        kind = reply[0]
        if kind == "ok":
            job.future.set_result(reply[1])
        elif kind == "input":
            _kind, name, message, field_, resource = reply
            if name == "InvalidResourceError":
                job.future.set_exception(InvalidResourceError(message, resource=resource or "?", field=field_))
            else:
                job.future.set_exception(_INPUT_ERRORS.get(name, InputError)(message, field=field_))
        else:
            self.pool.metrics.inc("engine_errors")
            job.future.set_exception(EngineError(str(reply[1])))


class WorkerPool:
    """N supervised engine workers evaluating CDS Hooks requests (see the module docstring)."""

    def __init__(self, spec: WorkerSpec, *, size: int | None = None, timeout_s: float = 10.0,
                 max_pending: int = 64, quarantine: Quarantine | None = None, metrics: PoolMetrics | None = None,
                 start_timeout_s: float = 120.0, context: str = "spawn") -> None:
        self.id = next(_POOL_IDS)
        self.spec = spec
        self.size = size or default_worker_count()
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.quarantine = quarantine or Quarantine()
        self.metrics = metrics or PoolMetrics()
        self.start_timeout_s = start_timeout_s
        self._ctx: Any = multiprocessing.get_context(context)  # spawn or forkserver: both have Process
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._ready_cond = threading.Condition()
        self._stopping = threading.Event()
        self._closing = False
        self._started = False
        self.pending = 0
        self.peak_pending = 0
        self._slots = [_Slot(self, i) for i in range(self.size)]

    @property
    def digest(self) -> str:
        return self.spec.digest

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> WorkerPool:
        """Start every worker in parallel and return at once (calls queue until one is ready)."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        for slot in self._slots:
            slot.thread.start()
        return self

    def _ready_changed(self) -> None:
        with self._ready_cond:
            self._ready_cond.notify_all()

    def ready_count(self) -> int:
        return sum(1 for s in self._slots if s.alive())

    def wait_ready(self, count: int | None = None, timeout: float | None = None) -> bool:
        """Block until ``count`` (default: all) workers are compiled and alive; False on timeout."""
        wanted = self.size if count is None else count
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready_cond:
            while self.ready_count() < wanted:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._ready_cond.wait(0.1 if remaining is None else min(0.1, remaining))
        return True

    def pids(self) -> list[int]:
        return [pid for pid in (s.pid for s in self._slots) if pid is not None]

    def close(self, *, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop accepting calls; with ``graceful`` let queued and running calls finish first."""
        with self._lock:
            self._closing = True
            started = self._started
        if not started:
            return
        if not graceful:
            self._stopping.set()
            for slot in self._slots:  # wake slots blocked on a call
                process = slot.process
                if process is not None and process.exitcode is None:
                    process.kill()
            self._fail_queued()
        for _ in self._slots:
            self._jobs.put(_STOP)
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            slot.thread.join(max(0.1, deadline - time.monotonic()))
        self._stopping.set()
        self._fail_queued()

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP and (job.future.running() or job.future.set_running_or_notify_cancel()):
                job.future.set_exception(PoolClosed("the engine pool stopped"))

    def retire(self) -> threading.Thread:
        """Close gracefully in the background (a reload's previous pool); returns the thread."""
        thread = threading.Thread(target=self.close, name=f"cds-engine-retire-{self.id}", daemon=True)
        thread.start()
        return thread

    # -- calls ---------------------------------------------------------------------------------
    def submit_encoded(self, message: bytes, key: str, label: str | None = None) -> Future[Any]:
        """Queue one encoded request (see :func:`encode_request`); a Future of an EvaluationSummary.

        ``label`` names the call in logs and in :meth:`pid_serving` (the service passes its hookInstance).
        """
        key = f"{self.spec.digest}:{key}"
        quarantined = self.quarantine.check(key)
        if quarantined is not None:
            self.metrics.inc("quarantined_calls")
            log.warning("call %s: payload %s is quarantined, answered without an engine worker", label, key[-12:])
            raise quarantined("this request took down engine workers repeatedly and is quarantined",
                              quarantined=True)
        with self._lock:
            if self._closing:
                raise PoolClosed("this engine pool was retired")
            if self.pending >= self.max_pending:
                raise PoolBusy("too many evaluations queued; retry shortly")
            self.pending += 1
            self.peak_pending = max(self.peak_pending, self.pending)
        self.metrics.inc("calls")
        future: Future[Any] = Future()
        future.add_done_callback(self._release)
        self._jobs.put(_Job(message, key, future, label))
        return future

    def _release(self, _future: Future[Any]) -> None:
        with self._lock:
            self.pending -= 1

    def submit(self, payload: dict[str, Any], hook: str | None = None, now: str | None = None,
               label: str | None = None) -> Future[Any]:
        return self.submit_encoded(*encode_request(payload, hook, now), label=label)

    def evaluate_sync(self, payload: dict[str, Any], hook: str | None = None, now: str | None = None) -> Any:
        """Evaluate and wait (tests, scripts): the EvaluationSummary or the call's error."""
        return self.submit(payload, hook, now).result()

    async def evaluate(self, payload: dict[str, Any], hook: str | None = None, now: str | None = None,
                       label: str | None = None) -> Any:
        """Evaluate on a worker without blocking the event loop (the request is pickled off-loop)."""
        message, key = await asyncio.to_thread(encode_request, payload, hook, now)
        return await asyncio.wrap_future(self.submit_encoded(message, key, label=label))

    def pid_serving(self, label: str) -> int | None:
        """The pid of the worker evaluating the call named ``label`` right now, if any."""
        for slot in self._slots:
            if slot.busy and slot.current_label == label:
                return slot.pid
        return None

    def stats(self) -> dict[str, Any]:
        """For status pages and metrics: size, ready workers, their pids, pending calls, counters."""
        return {"kind": "processes", "digest": self.spec.digest, "size": self.size, "ready": self.ready_count(),
                "pids": self.pids(), "pending": self.pending, "peak_pending": self.peak_pending,
                "queued": self._jobs.qsize(), "busy": sum(1 for s in self._slots if s.busy),
                "busy_pids": [s.pid for s in self._slots if s.busy and s.pid is not None],
                "quarantined_payloads": len(self.quarantine), "timeout_s": self.timeout_s,
                **self.metrics.snapshot()}
