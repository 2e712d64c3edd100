"""Run rule evaluations off the event loop, one at a time, with a bounded queue.

durable_rules is not thread-safe and never releases the GIL (durable-rules-notes.md), and the engine
serialises every call with ``cds.engine.ENGINE_LOCK`` anyway. So evaluations go to one dedicated
thread: the event loop stays free to accept requests, read bodies and fetch FHIR data, while the
engine sees exactly one caller. Beyond ``max_pending`` queued evaluations new calls get 503 rather
than waiting without bound.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cds.service.errors import Overloaded

__all__ = ["EvaluationRunner"]

T = TypeVar("T")


class EvaluationRunner:
    """A single-thread executor with a pending-call bound (counted on the event loop thread)."""

    def __init__(self, *, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self.pending = 0
        self.peak_pending = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cds-engine")

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self.pending >= self.max_pending:
            raise Overloaded("too many evaluations queued; retry shortly")
        loop = asyncio.get_running_loop()
        future = self._executor.submit(functools.partial(fn, *args, **kwargs))
        self.pending += 1
        self.peak_pending = max(self.peak_pending, self.pending)
        # Released when the work really ends, not when a disconnected client's await is cancelled.
        future.add_done_callback(functools.partial(self._done, loop))
        return await asyncio.wrap_future(future)

    def _done(self, loop: asyncio.AbstractEventLoop, _future: Any) -> None:
        try:
            loop.call_soon_threadsafe(self._release)
        except RuntimeError:  # the loop is closed (shutdown): nothing left to count
            pass

    def _release(self) -> None:
        self.pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
