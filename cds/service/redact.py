"""Keep bearer tokens out of storage and logs (CDS Hooks best practice: never store or log them).

The audit trail keeps the whole request so a call can be replayed, minus the FHIR access token; the
log filter is a second line of defence for anything that slips into a message (a JWT, a header).
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["REDACTED", "RedactingFilter", "install_log_redaction", "redact_request", "redact_text"]

REDACTED = "[redacted]"

_JSON_TOKEN = re.compile(r'("(?:access_token|refresh_token|id_token)"\s*:\s*)"(?:[^"\\]|\\.)*"')
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


def redact_request(body: Any) -> Any:
    """A copy of a parsed request with ``fhirAuthorization.access_token`` replaced; other fields kept.

    Only the two levels that change are copied (a deep copy of a 1 MB prefetch costs ~50 ms); the
    rest is shared with the request, which nothing downstream modifies.
    """
    if not isinstance(body, dict):
        return body
    clean = dict(body)
    auth = clean.get("fhirAuthorization")
    if isinstance(auth, dict):
        auth = clean["fhirAuthorization"] = dict(auth)
        for key in ("access_token", "refresh_token", "id_token"):
            if key in auth:
                auth[key] = REDACTED
    return clean


def redact_text(text: str) -> str:
    """Redact token-looking substrings of free text (raw bodies that are not JSON, log lines)."""
    text = _JSON_TOKEN.sub(lambda m: m.group(1) + f'"{REDACTED}"', text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _JWT.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message with :func:`redact_text`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactingFilter()


def install_log_redaction(*logger_names: str) -> None:
    """Attach the filter to named loggers and to every handler of the root logger.

    A logger's filters do not apply to records of its children, so the root handlers carry the
    filter for ``cds.*`` records; ``cds serve`` also puts it on uvicorn's handlers (its log config).
    """
    for name in logger_names or ("cds", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
