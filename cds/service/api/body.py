"""Read and parse a request body with a size limit and errors that name the problem."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from cds.service.errors import BadRequest, PayloadTooLarge

__all__ = ["read_body", "parse_json_body"]


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Constant(ValueError):
    """NaN / Infinity: accepted by Python's json, not by RFC 8259."""


def _no_constants(name: str) -> Any:
    raise _Constant(f"{name} is not allowed in JSON (RFC 8259)")


def parse_json_body(raw: bytes) -> Any:
    if not raw.strip():
        raise BadRequest("the request body is empty; a JSON object is required")
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except _Constant as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from None
