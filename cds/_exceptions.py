"""The exception tree of the ``cds`` package.

Every error the package raises on purpose is a :class:`CDSError`; callers (the CLI, the HTTP service)
map the branches to exit codes and HTTP statuses without looking at messages::

    CDSError
    ├── InputError                 bad input from the caller: CLI exit 2, HTTP 400
    │   ├── NotJSONError           the payload is not JSON at all
    │   ├── InvalidRequestError    JSON, but not a CDS Hooks request or FHIR Bundle we can read
    │   └── InvalidResourceError   a FHIR resource the rules need fails R4 validation
    ├── RulesetError               the rule files do not load, validate or compile
    └── EngineError                durable_rules failed while evaluating (a bug, never the caller's fault)
"""

from __future__ import annotations

__all__ = [
    "CDSError",
    "EngineError",
    "InputError",
    "InvalidRequestError",
    "InvalidResourceError",
    "NotJSONError",
    "RulesetError",
]


class CDSError(Exception):
    """Base class of every error the package raises on purpose."""


class InputError(CDSError):
    """The caller's input is unusable; ``field`` names where (a JSON path or a FHIR path)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotJSONError(InputError):
    """Raised when the payload cannot be parsed as JSON."""


class InvalidRequestError(InputError):
    """Raised when JSON is neither a usable CDS Hooks request nor a FHIR Bundle/resource."""


class InvalidResourceError(InputError):
    """Raised when a FHIR resource the rules would use fails FHIR R4 validation.

    Resources the rules never look at are not validated and never cause this error.
    """

    def __init__(self, message: str, *, resource: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.resource = resource


class RulesetError(CDSError):
    """Raised when rule or value-set files cannot be loaded, validated or compiled.

    ``issues`` holds every problem found (each a string "file:line: [rule] message"), not just the first.
    """

    def __init__(self, message: str, issues: list[str] | None = None) -> None:
        super().__init__(message if not issues else message + "\n" + "\n".join(issues))
        self.issues = list(issues or [])


class EngineError(CDSError):
    """Raised when the rule engine fails during an evaluation (an action raised, a sid leaked...)."""
