"""Read and parse a request body with limits (size, nesting, numbers) and errors that name the problem.

Every way a body can be unusable is a 4xx here, never a 500 later: a Content-Type that is not JSON
(415), too many bytes (413), not UTF-8 / not JSON / NaN or Infinity constants / an integer over
Python's 4,300-digit conversion limit / nesting deeper than ``CDS_MAX_JSON_DEPTH`` (400), and numbers
the rule engine cannot hold (``|x| > CDS_MAX_NUMBER_MAGNITUDE``, which includes ``1e400`` read as
infinity): durable_rules fails on such facts and leaves state behind, so they never reach it.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from cds.service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from cds.service.schemas import error_field

__all__ = ["JSON_MEDIA_TYPES", "check_content_type", "check_json_limits", "parse_json_body", "read_body",
           "validate_or_400"]

# application/json (RFC 8259), application/fhir+json (FHIR R4), application/json+fhir (FHIR DSTU2 clients)
JSON_MEDIA_TYPES = frozenset({"application/json", "application/fhir+json", "application/json+fhir"})
_DEFAULT_MAX_DEPTH = 64
_DEFAULT_MAX_MAGNITUDE = 1e15

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


def check_content_type(request: Request) -> None:
    """415 unless the body is declared as JSON (parameters such as ``charset=utf-8`` are fine).

    A request without a Content-Type is read as JSON (some clients omit it); a declared other type
    (``text/plain``, a form) is refused: the client meant something else than it sent.
    """
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type not in JSON_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media_type[:100]!r} is not supported; send application/json or application/fhir+json",
            field="Content-Type")
    for param in declared.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(f"charset {value.strip()[:40]!r} is not supported; JSON is UTF-8",
                                       field="Content-Type")


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


def parse_json_body(raw: bytes, *, max_depth: int = _DEFAULT_MAX_DEPTH,
                    max_magnitude: float | None = _DEFAULT_MAX_MAGNITUDE) -> Any:
    """The parsed body, or a 400 saying what is wrong with it (see the module docstring).

    ``max_magnitude=None`` leaves the number check to the caller (:func:`check_json_limits`), which
    the service uses to audit the parsed body before refusing it.
    """
    if not raw.strip():
        raise BadRequest("the request body is empty; a JSON object is required")
    try:
        payload = json.loads(raw, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except _Constant as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"the request body is nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # int() over sys.get_int_max_str_digits() (4,300 digits)
        raise BadRequest(f"the request body has a number that cannot be read: {str(exc)[:120]}") from None
    check_json_limits(payload, max_depth=max_depth, max_magnitude=max_magnitude)
    return payload


def check_json_limits(payload: Any, *, max_depth: int, max_magnitude: float | None) -> None:
    """400 if ``payload`` nests deeper than ``max_depth`` or holds a number beyond ``max_magnitude``.

    One iterative pass (no recursion, so no RecursionError on hostile input); the path of the
    offending value is looked up only when there is one.
    """
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            if (max_magnitude is not None and isinstance(value, (int, float)) and not isinstance(value, bool)
                    and _too_big(value, max_magnitude)):
                where = _path_to(payload, value) or "(body)"
                shown = "Infinity" if isinstance(value, float) and math.isinf(value) else f"{value:.6g}"
                raise BadRequest(f"{where}: the number {shown} is beyond what can be evaluated "
                                 f"(|x| <= {max_magnitude:g})", field=where)
            continue
        if depth > max_depth:
            raise BadRequest(f"the request body is nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, int, float)))


def _too_big(value: int | float, limit: float) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value) or abs(value) > limit
    return abs(value) > limit


def _path_to(root: Any, target: Any) -> str | None:
    """Dotted path of the first value that *is* ``target`` (identity), e.g. ``prefetch.obs.entry[0]``."""
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        value, path = stack.pop()
        if value is target:
            return path
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return None
