"""HTTP errors of the service and their FHIR ``OperationOutcome`` bodies.

CDS Hooks 2.0 defines only 200 and 412; the 3.0 ballot asks for an OperationOutcome on any non-2xx,
which also tells an integrator *which field* was wrong. The tree::

    ServiceError                      -> OperationOutcome, status below
    ├── BadRequest          400       malformed JSON or a request that breaks the spec (names the field)
    ├── Unauthorized        401       any JWT problem; the body never says which
    ├── NotFound            404       unknown service id
    ├── PayloadTooLarge     413
    ├── UnsupportedMediaType 415      Content-Type is not JSON
    ├── PrefetchUnavailable 412       data missing from prefetch and no way to fetch it
    ├── Overloaded          503       too many evaluations queued
    ├── QueueDeadline       503       the call waited past CDS_QUEUE_DEADLINE_S before it could be evaluated
    ├── AuditUnavailable    503       the audit row could not be committed, so no cards are given
    ├── EngineCrashed       500       the engine worker died on this call (or the payload is quarantined)
    ├── EngineTimedOut      503       the engine worker exceeded its deadline (killed and replaced)
    └── InternalError       500       a bug; the body says nothing more

Messages are written for the caller; internal details go to the log, never into a response.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuditUnavailable",
    "BadRequest",
    "EngineCrashed",
    "EngineTimedOut",
    "InternalError",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PrefetchUnavailable",
    "QueueDeadline",
    "ServiceError",
    "Unauthorized",
    "UnsupportedMediaType",
    "operation_outcome",
]


def operation_outcome(
    message: str, *, code: str, severity: str = "error", expression: str | None = None
) -> dict[str, Any]:
    """A one-issue FHIR R4 OperationOutcome (``code`` from the IssueType value set)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class ServiceError(Exception):
    """An error with an HTTP status and an OperationOutcome body."""

    status_code = 500
    issue_code = "exception"
    outcome = "error"  # short label stored in the audit trail
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        return operation_outcome(self.message, code=self.issue_code, expression=self.field)


class BadRequest(ServiceError):
    """Raised for malformed JSON or a request that breaks CDS Hooks 2.0; ``field`` names where."""

    status_code = 400
    issue_code = "invalid"
    outcome = "bad-request"


class Unauthorized(ServiceError):
    """Raised for any missing or invalid JWT; the reason is logged, never returned."""

    status_code = 401
    issue_code = "login"
    outcome = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}

    def __init__(self, reason: str) -> None:
        super().__init__("unauthorized")
        self.reason = reason  # for the server log only


class NotFound(ServiceError):
    """Raised for an unknown service id."""

    status_code = 404
    issue_code = "not-found"
    outcome = "not-found"


class PayloadTooLarge(ServiceError):
    """Raised when the body exceeds ``CDS_MAX_BODY_BYTES``."""

    status_code = 413
    issue_code = "too-costly"
    outcome = "too-large"


class UnsupportedMediaType(ServiceError):
    """Raised when a body is sent with a Content-Type other than JSON (a text/plain body is not evaluated)."""

    status_code = 415
    issue_code = "not-supported"
    outcome = "unsupported-media-type"


class PrefetchUnavailable(ServiceError):
    """Raised when needed data is neither prefetched nor obtainable from ``fhirServer`` (spec: 412)."""

    status_code = 412
    issue_code = "incomplete"
    outcome = "precondition-failed"


class Overloaded(ServiceError):
    """Raised when the evaluation queue is full; the client may retry."""

    status_code = 503
    issue_code = "transient"
    outcome = "overloaded"
    headers = {"Retry-After": "1"}


class QueueDeadline(ServiceError):
    """Raised when a call waited longer than ``CDS_QUEUE_DEADLINE_S`` (since it arrived) to be evaluated.

    Answering late is worse than answering "retry": an EHR waits on the user's screen, and by the time
    a late answer comes the user has moved on. The call was never evaluated.
    """

    status_code = 503
    issue_code = "transient"
    outcome = "queue-deadline"
    headers = {"Retry-After": "2"}


class AuditUnavailable(ServiceError):
    """Raised when the audit row of an answered call could not be committed (database down, disk full).

    The cards are withheld: the README promises every answer is audited, so an unaudited answer is never
    sent. The client may retry once the database is back.
    """

    status_code = 503
    issue_code = "transient"
    outcome = "audit-failed"
    headers = {"Retry-After": "5"}

    def __init__(self) -> None:
        super().__init__("the call could not be recorded in the audit trail; no answer is given without it, "
                         "retry shortly")


class InternalError(ServiceError):
    """Raised (or substituted) for bugs; the body carries no detail."""

    status_code = 500
    issue_code = "exception"
    outcome = "error"

    def __init__(self) -> None:
        super().__init__("internal error")


class EngineCrashed(ServiceError):
    """Raised when the engine worker evaluating the call died, or the payload is quarantined for that.

    A 500: retrying the same request is not expected to help (a payload that keeps crashing workers is
    quarantined and answered at once). The audit outcome is ``engine-crash``.
    """

    status_code = 500
    issue_code = "exception"
    outcome = "engine-crash"

    def __init__(self, *, quarantined: bool = False) -> None:
        super().__init__("the rule engine failed on this request" + (" (quarantined)" if quarantined else ""))


class EngineTimedOut(ServiceError):
    """Raised when the engine worker did not answer within ``CDS_ENGINE_TIMEOUT_S`` (it was replaced)."""

    status_code = 503
    issue_code = "timeout"
    outcome = "engine-timeout"

    def __init__(self, *, quarantined: bool = False) -> None:
        super().__init__("the rule engine did not answer in time" + (" (quarantined)" if quarantined else ""))
