"""FHIR date and dateTime parsing.

FHIR allows partial dates ("2021", "2021-03") and dateTimes with or without a zone. Look-back windows
compare instants, so every value becomes an aware UTC datetime: partial dates take the first instant of
the period they name, and a dateTime without a zone is read as UTC (stated in the explanation output
rather than guessed from the server's locale).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

__all__ = ["parse_fhir_datetime", "parse_now"]

_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def parse_fhir_datetime(value: object) -> datetime | None:
    """Parse a FHIR date/dateTime/instant string; ``None`` for anything unusable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    match = _PARTIAL.match(value)
    if match:
        year, month, day = match.groups()
        try:
            return datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
        except ValueError:
            return None
    text = value.replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_now(value: str | datetime | None) -> datetime:
    """The evaluation instant: the value given (ISO 8601) or the current time, always aware UTC."""
    if value is None:
        return datetime.now(UTC)
    parsed = parse_fhir_datetime(value)
    if parsed is None:
        raise ValueError(f"not an ISO 8601 date or dateTime: {value!r}")
    return parsed.astimezone(UTC)
