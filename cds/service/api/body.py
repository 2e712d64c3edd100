"""Read and parse a request body with a size limit and errors that name the problem."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from cds.service.errors import BadRequest, PayloadTooLarge
from cds.service.schemas import error_field

__all__ = ["parse_json_body", "read_body", "validate_or_400"]

ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_or_400(model: type[ModelT], data: Any, *, what: str, prefix: str = "") -> ModelT:
    """``model.model_validate(data)``, or a 400 whose OperationOutcome names the first bad field.

    ``what`` names the whole body in messages ("request", "feedback"); ``prefix`` roots field paths
    (``context`` for hook contexts).
    """
    if not prefix and not isinstance(data, dict):
        raise BadRequest(f"the {what} body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, message = error_field(exc, prefix)
        raise BadRequest(f"{field or what}: {message}", field=field or None) from None


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
