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
# A bearer credential: 4+ token characters with a digit or punctuation in them, or 20+ of any. Plain
# words ("no bearer token", "Bearer realm") are prose, not credentials, and are left alone.
_BEARER = re.compile(r"(?i)\b(bearer(?:\s+|%20|\+))(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{4,}"
                     r"|(?i:\b(bearer(?:\s+|%20|\+)))[A-Za-z0-9._~+/=-]{20,}")
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
    text = _BEARER.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)
    return _JWT.sub(REDACTED, text)


def _redact_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts tokens from each record's message and arguments.

    The arguments are redacted one by one and keep their shape: formatters may read them (uvicorn's
    access formatter unpacks ``record.args`` as ``(client, method, path, version, status)``), so
    replacing them with a pre-formatted message lost every access line that carried a token
    ("--- Logging error ---"). The format string is redacted too, for tokens written into it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redact_arg(a) for a in args)
        elif isinstance(args, dict):
            record.args = {k: _redact_arg(v) for k, v in args.items()}
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
