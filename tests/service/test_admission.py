"""Admission turns (cds.service.admission): at most N calls do their CPU work at once, first come first
served; a call that gets no turn before its deadline is refused at the deadline, never served late."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio
import pytest

from cds.service.admission import Admission, NotAdmitted

T = TypeVar("T")


def _run(scenario: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run`` in a thread of its own: the session's browser fixture keeps an event loop in this one."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(anyio.run, scenario).result(timeout=60)


def test_no_turn_before_the_deadline_is_refused_at_the_deadline() -> None:
    async def scenario() -> float:
        admission = Admission(1)
        async with admission.turn(1.0):
            started = time.perf_counter()
            with pytest.raises(NotAdmitted) as refused:
                async with admission.turn(0.3):
                    pytest.fail("a second turn was given while the only one was held")
            assert admission.waiting == 0
            # the held turn is never freed here: an answer at all means it was refused at its deadline
            assert time.perf_counter() - started < 30
            return refused.value.waited_s

    waited = _run(scenario)
    assert 0.25 <= waited < 30


def test_turns_are_first_come_first_served_and_released_on_errors() -> None:
    async def scenario() -> list[int]:
        admission = Admission(1)
        order: list[int] = []

        async def call(n: int) -> None:
            async with admission.turn(10):
                order.append(n)
                await anyio.sleep(0.01)
                if n == 1:
                    raise RuntimeError("a failing call still gives its turn back")

        async def guarded(n: int) -> None:
            try:
                await call(n)
            except RuntimeError:
                pass

        async with anyio.create_task_group() as tasks:
            for n in range(6):
                tasks.start_soon(guarded, n)
                await anyio.sleep(0.001)  # arrive in this order
        return order

    assert _run(scenario) == [0, 1, 2, 3, 4, 5]


def test_the_limit_is_the_number_of_calls_working_at_once() -> None:
    async def scenario() -> int:
        admission = Admission(3)
        busy = peak = 0

        async def call() -> None:
            nonlocal busy, peak
            async with admission.turn(10):
                busy += 1
                peak = max(peak, busy)
                await anyio.sleep(0.02)
                busy -= 1

        async with anyio.create_task_group() as tasks:
            for _ in range(12):
                tasks.start_soon(call)
        return peak

    assert _run(scenario) == 3
    with pytest.raises(ValueError):
        Admission(0)
