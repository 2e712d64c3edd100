"""FHIR R4 validation with the ``fhir.resources`` R4B models, applied only where it matters.

Why only where it matters: validating every resource of a 480-resource Synthea bundle costs ~200 ms
against 8 ms for ``json.loads``. The ingest step pre-filters raw resources by type and code, and the
fact builders call :func:`validate_resource` on just the resources whose values they read. A resource
the rules never read can be malformed without failing the request; one they do read fails with an
:class:`InvalidResourceError` naming the resource and the field.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import threading
from collections import OrderedDict
from typing import Any

from pydantic import BaseModel, ValidationError

from cds._exceptions import InvalidResourceError

__all__ = ["resource_label", "validate_resource"]

_MODEL_CACHE: dict[str, type[BaseModel]] = {}

# Resources already found valid, by the digest of their canonical JSON. Validation is a pure function of
# the resource's content, and the same content comes back often: the suggestion a card creates for
# every patient (a static template plus subject and date), the shared patient of a rule-test file, an
# EHR's repeated prefetch. Only passes are remembered: an invalid resource is validated again, so its
# error is always raised with the same message. Bounded (LRU), digests only (no resource is kept).
_VALID_CACHE_SIZE = 8192
_VALID: OrderedDict[bytes, None] = OrderedDict()
_VALID_LOCK = threading.Lock()  # the service validates on several threads


def resource_label(resource: dict[str, Any]) -> str:
    """``Type/id`` of a raw resource, for messages and source references."""
    return f"{resource.get('resourceType', '?')}/{resource.get('id', '?')}"


def _model_for(resource_type: str) -> type[BaseModel]:
    model = _MODEL_CACHE.get(resource_type)
    if model is None:
        try:
            module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
            model = getattr(module, resource_type)
        except (ImportError, AttributeError):
            raise InvalidResourceError(
                f"unknown FHIR resource type {resource_type!r}",
                resource=resource_type,
                field="resourceType",
            ) from None
        _MODEL_CACHE[resource_type] = model
    return model


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(resource)"


def validate_resource(resource: dict[str, Any]) -> None:
    """Validate one raw resource against its FHIR R4 (R4B) model; raise on the first problem.

    Callers that may read a resource twice memoise per evaluation (``PatientRecord.validate``).
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise InvalidResourceError(
            "resource has no resourceType", resource=resource_label(resource), field="resourceType"
        )
    try:
        key = hashlib.blake2b(json.dumps(resource, sort_keys=True, ensure_ascii=False, allow_nan=False).encode(),
                              digest_size=16).digest()
    except (TypeError, ValueError, RecursionError):
        key = None  # not plain JSON data: validate without remembering
    if key is not None and _seen_valid(key):
        return
    model = _model_for(resource_type)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _format_location(tuple(first.get("loc", ())))
        label = resource_label(resource)
        raise InvalidResourceError(
            f"{label} is not valid FHIR R4: {where}: {first.get('msg', 'invalid')}",
            resource=label,
            field=where,
        ) from None
    except Exception as exc:  # noqa: BLE001 - fhir.resources raises TypeError/ValueError/KeyError on bad input
        label = resource_label(resource)
        detail = f"unknown resource type {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
        raise InvalidResourceError(f"{label} is not valid FHIR R4: {detail}", resource=label) from None
    if key is not None:
        with _VALID_LOCK:
            _VALID[key] = None
            if len(_VALID) > _VALID_CACHE_SIZE:
                _VALID.popitem(last=False)


def _seen_valid(key: bytes) -> bool:
    with _VALID_LOCK:
        if key in _VALID:
            _VALID.move_to_end(key)
            return True
    return False
