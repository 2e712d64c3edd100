"""``POST /cds-services/{id}``: call a CDS service (CDS Hooks 2.0 "Calling a CDS Service")."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cds.service.api.deps import CallerDep, StateDep
from cds.service.calls import handle_call

__all__ = ["router"]

router = APIRouter(prefix="/cds-services", tags=["services"])


@router.post("/{service_id}", name="call_service")
async def call_service(service_id: str, request: Request, state: StateDep, caller: CallerDep) -> JSONResponse:
    """Evaluate the request's patient and return ``{"cards": [...]}`` (+ ``systemActions``)."""
    status, body, headers = await handle_call(state, service_id, request, caller)
    return JSONResponse(body, status_code=status, headers=headers)
