"""``POST /cds-services/{id}``: call a CDS service (CDS Hooks 2.0 "Calling a CDS Service")."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cds.service.api.deps import CallerDep, StateDep
from cds.service.calls import handle_call
from cds.service.ssrf import set_allowed_fhir_servers

__all__ = ["router"]

router = APIRouter(prefix="/cds-services", tags=["services"])


@router.post("/{service_id}", name="call_service")
async def call_service(service_id: str, request: Request, state: StateDep, caller: CallerDep) -> JSONResponse:
    """Evaluate the request's patient and return ``{"cards": [...]}`` (+ ``systemActions``).

    Before the call runs, the FHIR servers this caller may name are recorded for the prefetch
    (:mod:`cds.service.ssrf`): its issuer's ``fhir_servers``; none for an anonymous caller (open
    mode allows loopback only).
    """
    issuer = state.settings.trusted_issuers.get(caller.iss) if caller.iss else None
    set_allowed_fhir_servers(issuer.fhir_servers if issuer else ())
    started = time.perf_counter()
    status, body, headers = await handle_call(state, service_id, request, caller)
    cards = body.get("cards") if status == 200 and isinstance(body, dict) else None
    request.app.state.metrics.observe_call(service_id, status, time.perf_counter() - started,
                                           cards if isinstance(cards, list) else ())
    return JSONResponse(body, status_code=status, headers=headers)
