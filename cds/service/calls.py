"""One CDS service call from body to cards: validate, complete prefetch, evaluate, audit.

Kept apart from the route so the flow reads top to bottom and every outcome (cards, 400, 404, 412,
500, 503) goes through the same audit path: nothing a request sends is lost, and the token never is
stored.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import anyio

from cds._exceptions import EngineError, InputError, InvalidResourceError
from cds.service import crud
from cds.service.api.body import parse_json_body, read_body, validate_or_400
from cds.service.errors import (
    BadRequest,
    EngineCrashed,
    EngineTimedOut,
    InternalError,
    NotFound,
    Overloaded,
    ServiceError,
)
from cds.service.prefetch import complete_prefetch
from cds.service.redact import redact_request, redact_text
from cds.service.schemas import HOOK_CONTEXTS, CdsRequest
from cds.service.security import Caller
from cds.service.state import ServiceState
from cds.service.why import store as why_store  # issue 12: the "Why this card" page
from cds.workers import PoolBusy, PoolClosed, WorkerCrashed, WorkerTimeout

__all__ = ["handle_call", "record_rejected_call"]

log = logging.getLogger(__name__)

_RAW_LIMIT = 1_000_000  # characters of a non-JSON body kept in the audit trail


def _validated(payload: Any, hook: str) -> CdsRequest:
    request = validate_or_400(CdsRequest, payload, what="request")
    if request.hook != hook:
        raise BadRequest(f"hook: this service handles {hook!r}, not {request.hook!r}", field="hook")
    validate_or_400(HOOK_CONTEXTS[hook], request.context, what="context", prefix="context")
    return request


def _input_error(exc: InputError) -> BadRequest:
    field = exc.field
    if isinstance(exc, InvalidResourceError) and field and not field.startswith(exc.resource):
        field = f"{exc.resource}.{field}"  # e.g. Observation/abc.valueQuantity.value
    return BadRequest(exc.message, field=field)


async def _evaluate(state: ServiceState, service_id: str, raw: bytes, audit: crud.CallAudit) -> dict[str, Any]:
    loaded = state.holder.current()
    audit.ruleset_digest = loaded.digest
    service = loaded.catalog.get(service_id)
    unknown = NotFound(f"no CDS service {service_id!r}; GET /cds-services lists them")
    # The body is kept (token redacted) whatever the outcome, even for an unknown service.
    try:
        payload = parse_json_body(raw)
    except BadRequest:
        audit.request_raw = redact_text(raw[:_RAW_LIMIT].decode("utf-8", "replace")) or None
        if service is None:
            raise unknown from None
        raise
    audit.request = redact_request(payload)
    if isinstance(payload, dict):
        instance = payload.get("hookInstance")
        audit.hook_instance = instance[:100] if isinstance(instance, str) else None
        context = payload.get("context")
        if isinstance(context, dict) and isinstance(context.get("patientId"), str):
            audit.patient_id = context["patientId"][:200]
    if service is None:
        raise unknown
    audit.hook = service.hook
    request = _validated(payload, service.hook)

    settings = state.settings
    if state.fhir is None:  # only before the lifespan started: a bug
        raise RuntimeError("the service is not started")
    completed = await complete_prefetch(
        templates=service.prefetch,
        prefetch=payload.get("prefetch"),
        context=request.context,
        fhir_server=request.fhirServer,
        access_token=request.fhirAuthorization.access_token if request.fhirAuthorization else None,
        client=state.fhir,
        deadline_s=settings.fhir_total_timeout_s,
    )
    audit.fetched_keys = completed.fetched
    audit.notes += completed.notes
    # The engine never needs (so never sees) the access token.
    to_evaluate = {k: v for k, v in payload.items() if k != "fhirAuthorization"}
    to_evaluate["prefetch"] = completed.prefetch
    summary = await _run_engine(state, to_evaluate, service.hook, audit)
    body = summary.response
    for card in body.get("cards", []):
        topic = (card.get("source") or {}).get("topic") or {}
        rule_id = topic.get("code") or "?"
        audit.cards.append(crud.CardAudit(
            card_uuid=card.get("uuid") or "", rule_id=rule_id,
            rule_version=topic.get("version") or summary.rule_versions.get(rule_id),
            indicator=card.get("indicator"),
        ))
    audit.notes += list(summary.notes)[:50]
    why_store.capture(audit, to_evaluate, body)  # issue 12: what the engine saw, stored with the audit row
    return body


async def _run_engine(state: ServiceState, payload: dict[str, Any], hook: str, audit: crud.CallAudit) -> Any:
    """Evaluate on the current rules' workers; engine failures become the service's errors.

    The rules are taken again here (not at the start of the call): a reload during the FHIR fetches
    retires the previous pool, and a call is then evaluated on the new rules, recorded with their
    digest. A pool retired between taking it and queueing (:class:`PoolClosed`) is simply retaken.
    """
    for _attempt in range(3):
        loaded = state.holder.current()
        audit.ruleset_digest = loaded.digest
        try:
            return await loaded.evaluator.evaluate(payload, hook, label=audit.hook_instance)
        except PoolClosed:
            continue
        except PoolBusy:
            raise Overloaded("too many evaluations queued; retry shortly") from None
        except WorkerCrashed as exc:
            raise EngineCrashed(quarantined=exc.quarantined) from exc
        except WorkerTimeout as exc:
            raise EngineTimedOut(quarantined=exc.quarantined) from exc
        except InputError as exc:
            raise _input_error(exc) from None
    raise Overloaded("the rules are being reloaded; retry shortly")


async def _store(state: ServiceState, audit: crud.CallAudit) -> None:
    try:
        await anyio.to_thread.run_sync(lambda: crud.record_call(sessions=state.sessions, audit=audit))
    except Exception:  # the cards still go out; the operator must see this
        log.exception("could not store the audit record of %s call %s", audit.service_id, audit.hook_instance)


async def handle_call(
    state: ServiceState, service_id: str, request: Any, caller: Caller
) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """(status, JSON body, extra headers) for one call; every path ends in an audit record."""
    started = time.perf_counter()
    audit = crud.CallAudit(service_id=service_id, received_at=datetime.now(UTC), client_iss=caller.iss)
    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None
    try:
        raw = await read_body(request, max_bytes=state.settings.max_body_bytes)
        body = await _evaluate(state, service_id, raw, audit)
        why_store.attach_links(state, request, audit, body)  # issue 12: signed "Why this card" link per card
        status, audit.outcome = 200, "ok"
    except ServiceError as exc:
        status, body, headers = exc.status_code, exc.body(), exc.headers
        audit.outcome, audit.error = exc.outcome, exc.message
        level = logging.ERROR if isinstance(exc, (EngineCrashed, EngineTimedOut)) else logging.INFO
        log.log(level, "%s call %s -> %d %s", service_id, audit.hook_instance, status, exc.message)
    except EngineError:
        log.exception("engine failure on %s call %s", service_id, audit.hook_instance)
        error = InternalError()
        status, body = error.status_code, error.body()
        audit.outcome, audit.error = "engine-error", error.message
    except Exception:
        log.exception("internal error on %s call %s", service_id, audit.hook_instance)
        error = InternalError()
        status, body = error.status_code, error.body()
        audit.outcome, audit.error = error.outcome, error.message
    audit.http_status = status
    audit.latency_ms = (time.perf_counter() - started) * 1000
    await _store(state, audit)
    return status, body, headers


async def record_rejected_call(state: ServiceState, service_id: str, error: ServiceError) -> None:
    """Audit a call refused before its handler ran (bad JWT): metadata only, no body is kept."""
    audit = crud.CallAudit(service_id=service_id, received_at=datetime.now(UTC), outcome=error.outcome,
                           http_status=error.status_code, error=error.message)
    await _store(state, audit)
