"""One CDS service call from body to cards: validate, complete prefetch, evaluate, audit, answer.

Kept apart from the route so the flow reads top to bottom and every outcome (cards, 400, 404, 412,
415, 500, 503) goes through the same audit path: nothing a request sends is lost, and the token never
is stored.

**Audit first, then answer.** The response is decided, then its audit row is committed, and only then
is it sent. If the row cannot be committed within ``CDS_AUDIT_TIMEOUT_S`` (database down, disk full)
a call that had cards is answered 503 + ``Retry-After`` with an OperationOutcome instead: no card ever
leaves without its audit row. The failure is logged and counted (:func:`crud.audit_failures`). An
error answer (4xx/5xx) is still sent when its row fails: it carries no clinical content.

FHIR fetches for missing prefetch happen *before* the call queues for an engine worker, so a slow
FHIR server never holds an engine slot. Every other wait of a call before it starts on a worker (the
service process busy with other calls, the engine queue) is bounded by ``CDS_QUEUE_DEADLINE_S``: past
it, 503 + ``Retry-After`` instead of a late answer.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import anyio

from cds._exceptions import EngineError, InputError, InvalidResourceError
from cds.service import crud
from cds.service.admission import NotAdmitted
from cds.service.api.body import check_content_type, check_json_limits, parse_json_body, read_body, validate_or_400
from cds.service.errors import (
    AuditUnavailable,
    BadRequest,
    EngineCrashed,
    EngineTimedOut,
    InternalError,
    NotFound,
    Overloaded,
    QueueDeadline,
    ServiceError,
)
from cds.service.prefetch import complete_prefetch
from cds.service.redact import redact_request, redact_text
from cds.service.schemas import HOOK_CONTEXTS, CdsRequest
from cds.service.security import Caller
from cds.service.state import ServiceState
from cds.service.why import store as why_store  # issue 12: the "Why this card" page
from cds.workers import PoolBusy, PoolClosed, QueueDeadlineExpired, WorkerCrashed, WorkerTimeout

__all__ = ["handle_call", "record_rejected_call"]

log = logging.getLogger(__name__)

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


async def _evaluate(state: ServiceState, service_id: str, raw: bytes, audit: crud.CallAudit,
                    started: float) -> dict[str, Any]:
    """Parse, check and keep the body in the call's turn (:mod:`cds.service.admission`), then fetch, evaluate."""
    settings = state.settings
    if state.admission is None:  # only before the app is built: a bug
        raise RuntimeError("the service is not started")
    remaining = settings.queue_deadline_s - (time.perf_counter() - started)
    try:
        async with state.admission.turn(remaining):
            payload, service, request = await _read_request(state, service_id, raw, audit)
    except NotAdmitted as exc:
        audit.notes.append("shed before its body was parsed: the service was busy (body not kept; the client retries)")
        raise QueueDeadline(f"the service is busy: the call waited {exc.waited_s:.1f} s for its turn (deadline "
                            f"{settings.queue_deadline_s:g} s) and was not evaluated; retry shortly") from None
    return await _fetch_and_run(state, payload, service, request, audit, started)


async def _read_request(state: ServiceState, service_id: str, raw: bytes,
                        audit: crud.CallAudit) -> tuple[Any, Any, CdsRequest]:
    """Parse and check the body, keep it in the audit, validate it: (payload, service, request)."""
    loaded = state.holder.current()
    audit.ruleset_digest = loaded.digest
    service = loaded.catalog.get(service_id)
    unknown = NotFound(f"no CDS service {service_id!r}; GET /cds-services lists them")
    settings = state.settings
    # The body is kept (token redacted) whatever the outcome, even for an unknown service.
    try:
        # In a thread: a 3 MB body takes ~30 ms to parse, which the event loop's other calls need not wait for.
        payload = await anyio.to_thread.run_sync(
            lambda: parse_json_body(raw, max_depth=settings.max_json_depth, max_magnitude=None))
    except BadRequest:
        limit = settings.audit_max_body_bytes
        audit.request_raw = redact_text(raw[:limit].decode("utf-8", "replace")) or None
        audit.request_bytes, audit.request_truncated = len(raw), len(raw) > limit
        if service is None:
            raise unknown from None
        raise
    # Numbers durable_rules cannot hold (and non-finite ones no database JSON can): found now, so the
    # audit's JSON copy is sanitised; refused below, once the call's metadata is recorded.
    try:
        await anyio.to_thread.run_sync(lambda: check_json_limits(
            payload, max_depth=settings.max_json_depth, max_magnitude=settings.max_number_magnitude))
        too_big: BadRequest | None = None
    except BadRequest as exc:
        too_big = exc
    # Off the event loop: compressing (and when needed redacting, sanitising) a 3 MB body takes ~30 ms.
    await anyio.to_thread.run_sync(lambda: _keep_body(audit, raw, payload, settings.audit_max_body_bytes,
                                                      non_finite=too_big is not None))
    if isinstance(payload, dict):
        instance = payload.get("hookInstance")
        audit.hook_instance = instance[:100] if isinstance(instance, str) else None
        context = payload.get("context")
        if isinstance(context, dict) and isinstance(context.get("patientId"), str):
            audit.patient_id = context["patientId"][:200]
    if service is None:
        raise unknown
    audit.hook = service.hook
    if too_big is not None:  # refused before validation or the engine reads such a number
        raise too_big
    request = _validated(payload, service.hook)
    audit.notes += _unusable_drafts(request.context)
    return payload, service, request


async def _fetch_and_run(state: ServiceState, payload: Any, service: Any, request: CdsRequest,
                         audit: crud.CallAudit, started: float) -> dict[str, Any]:
    """Complete the prefetch (outside any turn: a hung FHIR server holds none), evaluate, note the cards."""
    settings = state.settings
    if state.fhir is None:  # only before the lifespan started: a bug
        raise RuntimeError("the service is not started")
    fetch_started = time.perf_counter()
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
    # The queue deadline counts every wait since the call arrived (a busy service process, the engine
    # queue) except the FHIR fetches, which have their own deadline (CDS_FHIR_TOTAL_TIMEOUT_S).
    fetching = time.perf_counter() - fetch_started
    summary = await _run_engine(state, to_evaluate, service.hook, audit,
                                waited_since=started + fetching)
    body = summary.response
    for card in body.get("cards", []):
        topic = (card.get("source") or {}).get("topic") or {}
        rule_id = topic.get("code") or "?"
        reasons = card.get("overrideReasons")
        audit.cards.append(crud.CardAudit(
            card_uuid=card.get("uuid") or "", rule_id=rule_id,
            rule_version=topic.get("version") or summary.rule_versions.get(rule_id),
            indicator=card.get("indicator"),
            override_reasons=[r for r in reasons if isinstance(r, dict)] if isinstance(reasons, list) else [],
        ))
    audit.notes += list(summary.notes)[:50]
    why_store.capture(audit, to_evaluate, body)  # issue 12: what the engine saw, stored with the audit row
    return body


async def _run_engine(state: ServiceState, payload: dict[str, Any], hook: str, audit: crud.CallAudit, *,
                      waited_since: float) -> Any:
    """Evaluate on the current rules' workers; engine failures become the service's errors.

    ``waited_since`` (``perf_counter``): when the call's wait began; the part of ``CDS_QUEUE_DEADLINE_S``
    left is the pool's queue deadline, and a call with none left is refused without queueing, so
    under overload calls are shed (503) instead of all answering late.

    The rules are taken again here (not at the start of the call): a reload during the FHIR fetches
    retires the previous pool, and a call is then evaluated on the new rules, recorded with their
    digest. A pool retired between taking it and queueing (:class:`PoolClosed`) is simply retaken.
    """
    deadline = state.settings.queue_deadline_s
    for _attempt in range(3):
        loaded = state.holder.current()
        audit.ruleset_digest = loaded.digest
        waited = time.perf_counter() - waited_since
        if waited >= deadline:
            raise QueueDeadline(f"the call waited {waited:.1f} s (deadline {deadline:g} s) and was not evaluated; "
                                "retry shortly")
        try:
            return await loaded.evaluator.evaluate(payload, hook, label=audit.hook_instance,
                                                   queue_deadline_s=deadline - waited)
        except PoolClosed:
            continue
        except PoolBusy:
            raise Overloaded("too many evaluations queued; retry shortly") from None
        except QueueDeadlineExpired as exc:
            total = exc.waited_s + waited
            raise QueueDeadline(f"the call waited {total:.1f} s, {exc.waited_s:.1f} s of it for the rule engine "
                                f"(deadline {deadline:g} s), and was not evaluated; retry shortly") from None
        except WorkerCrashed as exc:
            raise EngineCrashed(quarantined=exc.quarantined) from exc
        except WorkerTimeout as exc:
            raise EngineTimedOut(quarantined=exc.quarantined) from exc
        except InputError as exc:
            raise _input_error(exc) from None
    raise Overloaded("the rules are being reloaded; retry shortly")


def _keep_body(audit: crud.CallAudit, raw: bytes, payload: Any, limit: int, *, non_finite: bool) -> None:
    """Put the audit's copy of a parsed body (raw gzip + sanitised JSON, tokens redacted) on ``audit``."""
    secrets: list[str] = []
    auth = payload.get("fhirAuthorization") if isinstance(payload, dict) else None
    if isinstance(auth, dict):
        secrets = [v for k, v in auth.items() if k in ("access_token", "refresh_token", "id_token") and isinstance(v, str)]
    kept = crud.stored_body(raw, redact_request(payload), limit=limit, secrets=secrets, non_finite=non_finite)
    audit.request, audit.request_gz = kept.request, kept.request_gz
    audit.request_bytes, audit.request_truncated = kept.request_bytes, kept.truncated
    audit.notes += kept.notes


def _unusable_drafts(context: Any) -> list[str]:
    """Audit notes for drafted MedicationRequests the facts cannot use (no medication): they are ignored.

    The CDS Hooks sandbox's first order-select sends such a draft (nothing chosen yet); it is not an error
    of the whole call, but the audit says why it produced no card.
    """
    drafts = context.get("draftOrders") if isinstance(context, dict) else None
    notes: list[str] = []
    for entry in (drafts or {}).get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "MedicationRequest":
            continue
        if resource.get("medicationCodeableConcept") is None and resource.get("medicationReference") is None:
            notes.append(f"draft MedicationRequest/{str(resource.get('id', '?'))[:64]} has no medication: ignored")
    return notes[:20]


async def _store(state: ServiceState, audit: crud.CallAudit) -> bool:
    """Commit the audit row; False (logged, counted) when it could not be committed in time.

    The write runs in a worker thread under ``CDS_AUDIT_TIMEOUT_S``; a write still running at the
    deadline is abandoned (it may yet commit: a 503 with a row is safe, a 200 without one is not).
    """
    try:
        with anyio.fail_after(state.settings.audit_timeout_s):
            await anyio.to_thread.run_sync(lambda: crud.record_call(sessions=state.sessions, audit=audit),
                                           abandon_on_cancel=True)
        return True
    except TimeoutError:
        crud.count_audit_failure()
        log.error("audit record of %s call %s not committed within %g s", audit.service_id,
                  audit.hook_instance, state.settings.audit_timeout_s)
    except Exception:
        crud.count_audit_failure()
        log.exception("could not store the audit record of %s call %s", audit.service_id, audit.hook_instance)
    return False


async def handle_call(
    state: ServiceState, service_id: str, request: Any, caller: Caller
) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """(status, JSON body, extra headers) for one call; nothing with cards goes out without its audit row."""
    started = time.perf_counter()
    audit = crud.CallAudit(service_id=service_id, received_at=datetime.now(UTC), client_iss=caller.iss)
    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None
    try:
        check_content_type(request)
        raw = await read_body(request, max_bytes=state.settings.max_body_bytes)
        body = await _evaluate(state, service_id, raw, audit, started)
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
    if not await _store(state, audit) and status < 400:
        refused = AuditUnavailable()
        return refused.status_code, refused.body(), refused.headers
    return status, body, headers


async def record_rejected_call(state: ServiceState, service_id: str, error: ServiceError) -> None:
    """Audit a call refused before its handler ran (bad JWT): metadata only, no body is kept."""
    audit = crud.CallAudit(service_id=service_id, received_at=datetime.now(UTC), outcome=error.outcome,
                           http_status=error.status_code, error=error.message)
    await _store(state, audit)
