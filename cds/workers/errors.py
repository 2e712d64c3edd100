"""Errors of the engine worker pool; the service maps them to HTTP statuses and audit outcomes."""

from __future__ import annotations

from cds._exceptions import CDSError, EngineError

__all__ = ["PoolBusy", "PoolClosed", "QueueDeadlineExpired", "WorkerCrashed", "WorkerFailure", "WorkerTimeout"]


class WorkerFailure(EngineError):
    """A worker process was lost while serving this call (``outcome`` is the audit label).

    ``quarantined`` is True when the call was refused without touching a worker because the same
    payload already took workers down (see :class:`cds.workers.pool.Quarantine`).
    """

    outcome = "engine-failure"

    def __init__(self, message: str, *, quarantined: bool = False) -> None:
        super().__init__(message)
        self.quarantined = quarantined


class WorkerCrashed(WorkerFailure):
    """The worker died (segfault, kill, out of memory) while evaluating this call."""

    outcome = "engine-crash"


class WorkerTimeout(WorkerFailure):
    """The worker did not answer within the per-call deadline; it was killed and replaced."""

    outcome = "engine-timeout"


class PoolBusy(CDSError):
    """Too many calls are pending (queued or running) in the pool; the caller may retry shortly."""


class PoolClosed(CDSError):
    """The pool was retired (a reload replaced it) or stopped; take the current one and retry."""


class QueueDeadlineExpired(CDSError):
    """The call waited for a worker longer than its queue deadline; it was not evaluated (retry later)."""

    def __init__(self, message: str, *, waited_s: float) -> None:
        super().__init__(message)
        self.waited_s = waited_s
