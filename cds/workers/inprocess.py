"""The evaluator interface on one in-process thread: for stand-in engines in tests and tools.

It offers what :class:`cds.workers.pool.WorkerPool` offers (``evaluate`` awaitable, ``stats``,
``start``/``wait_ready``/``close``/``retire``, the same pending bound and :class:`PoolBusy`), around
any object with ``evaluate(payload, hook=...)`` returning an :class:`cds.engine.Evaluation`. It runs
the engine in the calling process, so it protects nothing: the HTTP service uses the worker pool.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cds.workers.errors import PoolBusy, PoolClosed

__all__ = ["InProcessEvaluator"]


class InProcessEvaluator:
    """One engine, one thread (durable_rules is single-threaded), a bound on pending calls."""

    def __init__(self, engine: Any, *, max_pending: int = 64) -> None:
        self.engine = engine
        self.digest = engine.digest
        self.size = 1
        self.max_pending = max_pending
        self.pending = 0
        self.peak_pending = 0
        self._lock = threading.Lock()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cds-engine")

    def start(self) -> InProcessEvaluator:
        return self

    def wait_ready(self, count: int | None = None, timeout: float | None = None) -> bool:
        return True

    def _run(self, payload: dict[str, Any], hook: str | None, now: str | None) -> Any:
        body = {k: v for k, v in payload.items() if k != "fhirAuthorization"}
        if now is None:
            return self.engine.evaluate(body, hook=hook).summary()
        return self.engine.evaluate(body, hook=hook, now=now).summary()

    def submit(self, payload: dict[str, Any], hook: str | None = None, now: str | None = None,
               label: str | None = None) -> Future[Any]:
        with self._lock:
            if self._closing:
                raise PoolClosed("this evaluator was retired")
            if self.pending >= self.max_pending:
                raise PoolBusy("too many evaluations queued; retry shortly")
            self.pending += 1
            self.peak_pending = max(self.peak_pending, self.pending)
        future = self._executor.submit(self._run, payload, hook, now)
        future.add_done_callback(self._release)  # when the work really ends, not when a caller gives up
        return future

    def _release(self, _future: Future[Any]) -> None:
        with self._lock:
            self.pending -= 1

    def evaluate_sync(self, payload: dict[str, Any], hook: str | None = None, now: str | None = None) -> Any:
        return self.submit(payload, hook, now).result()

    async def evaluate(self, payload: dict[str, Any], hook: str | None = None, now: str | None = None,
                       label: str | None = None, queue_deadline_s: float | None = None) -> Any:
        """``queue_deadline_s`` is accepted for interface parity and not enforced (one thread, tests only)."""
        return await asyncio.wrap_future(self.submit(payload, hook, now))

    def stats(self) -> dict[str, Any]:
        return {"kind": "in-process", "digest": self.digest, "size": 1, "ready": 1, "pids": [],
                "pending": self.pending, "peak_pending": self.peak_pending}

    def close(self, *, graceful: bool = True, timeout: float = 30.0) -> None:
        with self._lock:
            self._closing = True
        self._executor.shutdown(wait=graceful, cancel_futures=not graceful)

    def retire(self) -> threading.Thread:
        thread = threading.Thread(target=self.close, daemon=True)
        thread.start()
        return thread
