"""Log formats for ``cds serve``: uvicorn's text lines (default) or one JSON object per line.

JSON logs (``CDS_LOG_FORMAT=json``) are for log collectors that index fields: every line has
``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; uvicorn's access lines also carry
``client``, ``method``, ``path``, ``http_version`` and ``status``; an exception adds ``exc_info``.
Records pass the token-redacting filter (:mod:`cds.service.redact`) before they are formatted, so the
fields are redacted as well.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "log_config"]

_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (no newlines inside: messages are JSON-escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            entry.update(zip(_ACCESS_FIELDS, record.args, strict=True))
            client, method, path, version, status = record.args
            entry["message"] = f'{client} - "{method} {path} HTTP/{version}" {status}'
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_config(log_format: str = "text", level: str = "info") -> dict[str, Any]:
    """uvicorn's logging config with the redacting filter on every handler, the service's own
    ``cds.*`` loggers on the same handler (else their INFO lines went nowhere), and, for ``json``,
    the JSON formatter on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "cds.service.redact.RedactingFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    if log_format == "json":
        config["formatters"] = {"json": {"()": "cds.service.logs.JsonFormatter"}}
        for handler in config["handlers"].values():
            handler["formatter"] = "json"
    config["loggers"]["cds"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config
