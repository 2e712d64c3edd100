"""Pydantic models of what EHRs send: the CDS Hooks 2.0 request, each hook's context, feedback.

Source: HL7 CDS Hooks 2.0.1 (cds-hooks.hl7.org/2.0) "Calling a CDS Service", "Feedback", and the hook
library (patient-view 1.0, order-select 1.0, order-sign 1.0). Unknown *extra* fields are kept, not
refused, so a 3.0 client (extra ``version`` fields, extensions) still gets cards; missing or
ill-typed *required* fields are refused with the field named. These models validate; the engine
still reads the raw dict (prefetch values by ``resourceType``), so nothing here rewrites the request.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "CdsRequest",
    "FeedbackItem",
    "FeedbackRequest",
    "FhirAuthorization",
    "HOOK_CONTEXTS",
    "OrderSelectContext",
    "OrderSignContext",
    "PatientViewContext",
    "FieldError",
    "check_base_url",
    "error_field",
]

class FieldError(ValueError):
    """A cross-field check that fails on one named field (kept in the pydantic error's ``ctx``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_USER_REF = re.compile(r"^(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$")
_NOT_BLANK = Field(min_length=1)


_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?)$")
_URL_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")  # RFC 3986, nothing else


def check_base_url(value: str) -> str:
    """A FHIR base URL as a client may send it, or ValueError: absolute http(s), a valid host, no
    credentials, query or fragment, no whitespace or control characters (CR/LF would split an HTTP
    request line). The trailing slash is dropped. Which hosts are *allowed* is decided elsewhere."""
    from urllib.parse import urlsplit

    if len(value) > 2000:
        raise ValueError("is longer than 2000 characters")
    if not _URL_CHARS.fullmatch(value):
        raise ValueError("must be an absolute http(s) URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("must be an absolute http(s) URL (the port is not valid)") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must be a base URL without query or fragment")
    host = parts.netloc.rsplit("@", 1)[-1]
    if port is not None:
        host = host[: host.rfind(":")]
    if not _HOST.fullmatch(host) or "%" in host:
        raise ValueError("must name a valid host")
    return value.rstrip("/")


class _Open(BaseModel):
    """Keeps unknown fields (forward compatibility), refuses wrong required ones."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FhirAuthorization(_Open):
    """OAuth 2.0 access token for ``fhirServer`` (spec 2.0: every field but ``patient`` is required)."""

    access_token: str = _NOT_BLANK
    token_type: Literal["Bearer"]
    expires_in: int = Field(ge=0)
    scope: str = _NOT_BLANK
    subject: str = _NOT_BLANK
    patient: str | None = None

    def __repr__(self) -> str:  # never print the token, even in a debugger or traceback
        return f"FhirAuthorization(token_type={self.token_type!r}, scope={self.scope!r}, access_token=[redacted])"

    __str__ = __repr__


def _check_bundle(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        raise ValueError("must be a FHIR Bundle (resourceType 'Bundle')")
    entries = value.get("entry", [])
    if entries is not None and not isinstance(entries, list):
        raise ValueError("entry must be a list")
    return value


def _bundle_refs(bundle: dict[str, Any]) -> set[str]:
    refs: set[str] = set()
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") and resource.get("id"):
            refs.add(f"{resource['resourceType']}/{resource['id']}")
    return refs


class _HookContext(_Open):
    userId: str = _NOT_BLANK
    patientId: str = _NOT_BLANK
    encounterId: str | None = Field(default=None, min_length=1)

    @field_validator("userId")
    @classmethod
    def _user_reference(cls, value: str) -> str:
        if not _USER_REF.match(value):
            raise ValueError("must be a reference [ResourceType]/[id] to a Practitioner, PractitionerRole, "
                             "Patient or RelatedPerson")
        return value


class PatientViewContext(_HookContext):
    """patient-view: the user opened a patient's record."""


class OrderSignContext(_HookContext):
    """order-sign: the user is about to sign ``draftOrders``."""

    draftOrders: dict[str, Any]

    _bundle = field_validator("draftOrders")(classmethod(lambda cls, v: _check_bundle(v)))


class OrderSelectContext(_HookContext):
    """order-select: the user selected ``selections`` among the ``draftOrders`` being written."""

    selections: list[str] = Field(min_length=1)
    draftOrders: dict[str, Any]

    _bundle = field_validator("draftOrders")(classmethod(lambda cls, v: _check_bundle(v)))

    @model_validator(mode="after")
    def _selections_in_drafts(self) -> OrderSelectContext:
        refs = _bundle_refs(self.draftOrders)
        for index, selection in enumerate(self.selections):
            if selection not in refs:
                raise FieldError(f"selections[{index}]", f"{selection!r} is not a resource of draftOrders")
        return self


HOOK_CONTEXTS: dict[str, type[_HookContext]] = {
    "patient-view": PatientViewContext,
    "order-select": OrderSelectContext,
    "order-sign": OrderSignContext,
}


class CdsRequest(_Open):
    """The body of ``POST {base}/cds-services/{id}``; ``context`` is validated per hook afterwards."""

    hook: str = _NOT_BLANK
    hookInstance: str
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, dict[str, Any] | None] | None = None
    extension: dict[str, Any] | None = None

    @field_validator("hookInstance")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValueError("must be a UUID") from None
        return value

    @field_validator("fhirServer")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_base_url(value) if value is not None else None

    @field_validator("prefetch")
    @classmethod
    def _resources(cls, value: dict[str, dict[str, Any] | None] | None) -> dict[str, Any] | None:
        for key, item in (value or {}).items():
            if item is not None and not isinstance(item.get("resourceType"), str):
                raise ValueError(f"prefetch value {key!r} is not a FHIR resource (no resourceType)")
        return value

    @model_validator(mode="after")
    def _server_with_token(self) -> CdsRequest:
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise FieldError("fhirServer", "is required when fhirAuthorization is given")
        return self


class Coding(_Open):
    system: str | None = Field(default=None, max_length=500)
    code: str = Field(min_length=1, max_length=200)
    display: str | None = Field(default=None, max_length=500)


class AcceptedSuggestion(_Open):
    id: str = _NOT_BLANK


class OverrideReason(_Open):
    reason: Coding | None = None
    userComment: str | None = None


class FeedbackItem(_Open):
    """One card's outcome (spec 2.0 "Feedback"): accepted (with suggestions taken) or overridden."""

    card: str = Field(min_length=1, max_length=100)  # the card's uuid
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: datetime

    @field_validator("outcomeTimestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must include a time zone (FHIR instant)")
        return value

    @model_validator(mode="after")
    def _outcome_fields(self) -> FeedbackItem:
        if self.outcome == "overridden" and self.acceptedSuggestions:
            raise FieldError("acceptedSuggestions", "is only allowed when outcome is accepted")
        if self.outcome == "accepted" and self.overrideReason is not None:
            raise FieldError("overrideReason", "is only allowed when outcome is overridden")
        return self


class FeedbackRequest(_Open):
    feedback: list[FeedbackItem] = Field(min_length=1)


def error_field(exc: ValidationError, prefix: str = "") -> tuple[str, str]:
    """(dotted field path, message) of a pydantic error, e.g. ``context.selections[0]``."""
    first = exc.errors()[0]
    parts: list[str] = [prefix] if prefix else []
    for item in first.get("loc", ()):
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            else:
                parts.append(f"[{item}]")
        else:
            parts.append(str(item))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        parts.append(cause.field)
        message = str(cause)
    if first.get("type") == "missing":
        message = "is required"
    return ".".join(parts), message
