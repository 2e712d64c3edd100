"""TEST-ONLY fault injection for the engine workers. Off unless a variable below is set.

Real crashes of durable_rules are not reproducible on demand, yet supervision and quarantine must be
tested deterministically. A worker reads these variables from its own environment (inherited from the
service when it is spawned); none is ever set in production, and nothing else reads them:

* ``CDS_FAULT_INJECT_CRASH_PATIENT=<id>``: the worker sends itself SIGSEGV when it receives a request
  whose ``context.patientId`` (or first Patient id) is ``<id>``.
* ``CDS_FAULT_INJECT_HANG_PATIENT=<id>``: the worker sleeps for an hour (a hang) on that patient.
* ``CDS_FAULT_INJECT_SLOW_PATIENT=<id>`` with ``CDS_FAULT_INJECT_SLOW_S`` (default 0.3): the worker
  sleeps that long before evaluating (to make calls overlap in tests).
* ``CDS_FAULT_INJECT_CRASH_CHECK=1``: the throwaway process that checks a candidate ruleset (start-up,
  reload) sends itself SIGSEGV before answering, as a candidate crashing durable_rules would.

Supervision is also tested with real external signals (``os.kill(worker_pid, SIGKILL)``), which need
no hook at all.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Faults", "crash_check_if_asked", "patient_of"]


def crash_check_if_asked() -> None:
    """In the ruleset-check process: SIGSEGV if ``CDS_FAULT_INJECT_CRASH_CHECK`` is set (tests only)."""
    if os.environ.get("CDS_FAULT_INJECT_CRASH_CHECK"):
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)


def patient_of(payload: Any) -> str | None:
    """The patient id of a request: ``context.patientId``, else the first Patient resource found."""
    if not isinstance(payload, dict):
        return None
    context = payload.get("context")
    if isinstance(context, dict) and isinstance(context.get("patientId"), str):
        return context["patientId"]
    if payload.get("resourceType") == "Patient":
        return payload.get("id")
    return None


@dataclass(frozen=True)
class Faults:
    crash: str | None = None
    hang: str | None = None
    slow: str | None = None
    slow_s: float = 0.3

    @classmethod
    def from_env(cls) -> Faults:
        env = os.environ
        return cls(crash=env.get("CDS_FAULT_INJECT_CRASH_PATIENT") or None,
                   hang=env.get("CDS_FAULT_INJECT_HANG_PATIENT") or None,
                   slow=env.get("CDS_FAULT_INJECT_SLOW_PATIENT") or None,
                   slow_s=float(env.get("CDS_FAULT_INJECT_SLOW_S") or 0.3))

    @property
    def active(self) -> bool:
        return bool(self.crash or self.hang or self.slow)

    def apply(self, payload: Any) -> None:
        """Misbehave as configured for this payload (never unless a variable is set)."""
        if not self.active:
            return
        patient = patient_of(payload)
        if patient is None:
            return
        if patient == self.crash:
            os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(5)  # the signal is delivered asynchronously: never evaluate after it
        if patient == self.hang:
            time.sleep(3600)
        if patient == self.slow:
            time.sleep(self.slow_s)
