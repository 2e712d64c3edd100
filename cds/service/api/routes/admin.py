"""``/admin``: the rulesets being served, and safe reload without a restart (issue 5).

``POST /admin/reload`` validates the rulesets folder, compiles it and runs every rule's own tests in a
throwaway process; only then do new engine workers start, and once they are ready they replace the old
ones (in-flight requests finish on the old rules). ``GET /admin/rulesets`` also reports the workers
(pids, ready count, restarts, crashes, timeouts, quarantined calls). A refused
change answers 409 with every reason and the old rules keep serving. Access: a Bearer token equal to
``CDS_ADMIN_TOKEN``, or, when none is configured, only clients on the loopback interface.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cds.service.api.deps import StateDep
from cds.service.errors import ServiceError

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["admin"])


class AdminForbidden(ServiceError):
    """Raised when an admin call has no valid admin token (or comes from off-host without one)."""

    status_code = 403
    issue_code = "forbidden"
    outcome = "forbidden"

    def __init__(self) -> None:
        super().__init__("admin access refused")


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _authorise(request: Request, state: Any) -> None:
    token = state.settings.admin_token
    if token is None:
        if not _is_loopback(request.client.host if request.client else None):
            raise AdminForbidden()
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token.get_secret_value()):
        raise AdminForbidden()


@router.get("/rulesets", name="admin_rulesets")
async def rulesets(request: Request, state: StateDep) -> dict[str, Any]:
    """The digest, folder and rule versions being served, the engine workers, the last reload's result."""
    _authorise(request, state)
    loaded = state.holder.current()
    rules = loaded.rules
    last = state.holder.last_result
    return {
        "digest": rules.digest,
        "directory": str(state.holder.directory),
        "include_drafts": getattr(rules, "include_drafts", False),
        "rules": [{"id": r.spec.id, "version": r.spec.version, "status": r.spec.status} for r in rules.rules],
        "workers": loaded.evaluator.stats(),
        "last_reload": last.to_json() if last is not None else None,
    }


@router.post("/reload", name="admin_reload")
async def reload(request: Request, state: StateDep) -> JSONResponse:
    """Reload the rulesets folder safely; 200 when serving the new (or unchanged) rules, 409 when refused."""
    _authorise(request, state)
    result = await anyio.to_thread.run_sync(state.holder.reload)
    return JSONResponse(result.to_json() | {"reason": result.reason}, status_code=200 if result.ok else 409)


def require_admin(request: Request, state: Any) -> None:
    """The ``/admin`` access rule, for other operator routes (``/metrics``): raises AdminForbidden."""
    _authorise(request, state)
