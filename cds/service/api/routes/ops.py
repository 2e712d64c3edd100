"""Operations: ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json`` and ``/docs``.

* ``/healthz``: the process answers (liveness probe). No check of anything else, on purpose: a
  liveness probe that fails when the database is down makes the orchestrator restart healthy
  processes in a loop.
* ``/readyz``: 200 when the rulesets are loaded, at least one engine worker is ready and the
  database answers ``SELECT 1`` within 2 s; else 503 with the reasons (readiness probe: take this
  replica out of the load balancer, do not restart it).
* ``/metrics``: Prometheus text format (:mod:`cds.service.metrics`); outside open mode the same
  access as ``/admin`` (``CDS_ADMIN_TOKEN`` as a Bearer token, or loopback clients when unset).
* ``/openapi.json`` and ``/docs``: the API description, behind the same JWT as the CDS routes
  outside open mode. ``/docs`` embeds the description in the page (Swagger UI from its CDN), so the
  browser needs no second authenticated request.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import text

from cds.service.api.deps import CallerDep, StateDep
from cds.service.api.routes.admin import require_admin
from cds.service.metrics import CONTENT_TYPE
from cds.service.state import ServiceState

__all__ = ["readiness", "router"]

router = APIRouter(tags=["operations"])

_DB_TIMEOUT_S = 2.0


@router.get("/healthz", name="healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and its event loop answers."""
    return {"status": "alive"}


def _database_answers(state: ServiceState) -> None:
    with state.db.connect() as connection:
        connection.execute(text("SELECT 1"))


async def readiness(state: ServiceState) -> list[str]:
    """Why this replica should not get traffic now (empty: ready)."""
    reasons: list[str] = []
    try:
        loaded = state.holder.current()
    except Exception as exc:  # noqa: BLE001 - a readiness probe reports, never raises
        return [f"rulesets: not loaded ({type(exc).__name__})"]
    if not loaded.catalog:
        reasons.append("rulesets: loaded but no CDS service is defined")
    try:
        stats = loaded.evaluator.stats()
        if int(stats.get("ready", 0)) < 1:
            reasons.append(f"engine: 0 of {stats.get('size', '?')} worker(s) ready")
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"engine: no status ({type(exc).__name__})")
    try:
        with anyio.fail_after(_DB_TIMEOUT_S):
            await anyio.to_thread.run_sync(_database_answers, state, abandon_on_cancel=True)
    except TimeoutError:
        reasons.append(f"database: no answer within {_DB_TIMEOUT_S:g} s")
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"database: unreachable ({type(exc).__name__})")
    return reasons


@router.get("/readyz", name="readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness: rulesets loaded, an engine worker ready, the database reachable; else 503 + reasons."""
    reasons = await readiness(state)
    if reasons:
        return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503)
    loaded = state.holder.current()
    return JSONResponse({"status": "ready", "rulesets": loaded.digest, "services": len(loaded.catalog)})


@router.get("/metrics", name="metrics")
async def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus text format: calls, latency, cards by rule, engine queue and workers, audit failures."""
    if not state.settings.open_mode:
        require_admin(request, state)
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/openapi.json", name="openapi")
async def openapi(request: Request, _caller: CallerDep) -> JSONResponse:
    """The OpenAPI description of this service (same authentication as the CDS routes)."""
    return JSONResponse(request.app.openapi())


_DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{spec: {spec}, dom_id: "#swagger-ui"}});</script>
</body></html>"""


@router.get("/docs", name="docs", response_class=HTMLResponse)
async def docs(request: Request, _caller: CallerDep) -> HTMLResponse:
    """Swagger UI with the OpenAPI description embedded (no second, unauthenticated fetch)."""
    spec: dict[str, Any] = request.app.openapi()
    embedded = json.dumps(spec).replace("</", "<\\/")  # never close the script element early
    return HTMLResponse(_DOCS.format(title=spec.get("info", {}).get("title", "CDS"), spec=embedded))
