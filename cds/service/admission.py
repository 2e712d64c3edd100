"""Admission: at most N calls are parsed and checked at once in the service process; the rest wait their turn.

Why: under load (64 clients posting Synthea-sized 1-3 MB bodies) every call parsed, checked and compressed
its body at the same time, in threads sharing one interpreter lock, so each took as long as all of them
together and no call finished within the queue deadline (p99 12 s with a 5 s deadline). Taking turns
(first come, first served) keeps each call's own work short, and a call that cannot get its turn before
the queue deadline is answered 503 + Retry-After at once instead of late (the EHR's user is waiting).
FHIR fetches are outside the turn: a hung FHIR server never holds one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["Admission", "NotAdmitted"]


class NotAdmitted(Exception):
    """No turn before the deadline; ``waited_s`` says how long the call waited."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"no turn within {waited_s:.1f} s")
        self.waited_s = waited_s


class Admission:
    """A first-come, first-served limit on calls doing CPU work in the service process at once."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the admission limit must be at least 1")
        self.limit = limit
        self._semaphore = anyio.Semaphore(limit)
        self.waiting = 0

    @asynccontextmanager
    async def turn(self, timeout_s: float) -> AsyncIterator[None]:
        """Hold one of the ``limit`` turns for the block; :class:`NotAdmitted` if none came within ``timeout_s``."""
        started = time.perf_counter()
        acquired = False
        self.waiting += 1
        try:
            with anyio.move_on_after(max(timeout_s, 0.0)):
                await self._semaphore.acquire()
                acquired = True
        finally:
            self.waiting -= 1
        if not acquired:
            raise NotAdmitted(time.perf_counter() - started)
        try:
            yield
        finally:
            self._semaphore.release()
