"""``GET /cds-services``: the discovery document (CDS Hooks 2.0 "Discovery")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cds.service.api.deps import CallerDep, StateDep

__all__ = ["router"]

router = APIRouter(prefix="/cds-services", tags=["discovery"])


@router.get("", name="discovery")
async def discovery(state: StateDep, _caller: CallerDep) -> dict[str, Any]:
    """One service per supported hook, with the prefetch templates the loaded rules need."""
    catalog = state.holder.current().catalog
    return {"services": [service.to_json() for service in catalog.values()]}
