"""``/admin``: the rulesets being served, and safe reload without a restart (issue 5).

``POST /admin/reload`` validates the rulesets folder, compiles it and runs every rule's own tests in a
throwaway process; only then do new engine workers start, and once they are ready they replace the old
ones (in-flight requests finish on the old rules). ``GET /admin/rulesets`` also reports the workers
(pids, ready count, restarts, crashes, timeouts, quarantined calls). A refused
change answers 409 with every reason and the old rules keep serving. Access: a Bearer token equal to
``CDS_ADMIN_TOKEN``, or, when none is configured, only clients on the loopback interface.

Governance (issue 12): ``GET /admin/dashboard`` (HTML with charts; ``dashboard.json``) shows per rule and
version the calls, cards by indicator, feedback outcomes, override rate and reasons over a date range;
``GET /admin/feedback.csv`` and ``feedback.json`` export the feedback (HTI-1 (b)(11)(ii)(C)).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from cds.service.api.deps import StateDep
from cds.service.errors import BadRequest, ServiceError

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


# -- issue 12: governance dashboard and feedback export ---------------------------------------------------

def _window(request: Request) -> Any:
    from cds.service.governance import parse_range

    try:
        return parse_range(request.query_params.get("from"), request.query_params.get("to"))
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        raise BadRequest(str(exc), field=field) from None


@router.get("/dashboard", name="admin_dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, state: StateDep) -> HTMLResponse:
    """Per rule and version over ``?from=YYYY-MM-DD&to=YYYY-MM-DD`` (default: 30 days): calls, cards by
    indicator, feedback outcomes, override rate and reasons, with charts (inline SVG, no script)."""
    _authorise(request, state)
    window = _window(request)

    def build() -> str:
        from cds.service.governance import summary
        from cds.service.governance_page import render_dashboard

        return render_dashboard(summary(state.sessions, window), query=str(request.url.query))

    html = await anyio.to_thread.run_sync(build)
    from cds.service.api.routes.why import PAGE_HEADERS  # no-store, no referrer, no script (CSP)

    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/dashboard.json", name="admin_dashboard_json")
async def dashboard_json(request: Request, state: StateDep) -> JSONResponse:
    """The dashboard's figures as JSON."""
    _authorise(request, state)
    window = _window(request)
    from cds.service.governance import summary

    result = await anyio.to_thread.run_sync(lambda: summary(state.sessions, window))
    return JSONResponse(result.to_json(), headers=_PRIVATE)


@router.get("/feedback.json", name="admin_feedback_json")
async def feedback_json(request: Request, state: StateDep) -> JSONResponse:
    """Every feedback item in the range with its intervention, action, reason, user, date and location."""
    _authorise(request, state)
    window = _window(request)
    from cds.service.governance import feedback_rows

    rows = await anyio.to_thread.run_sync(lambda: feedback_rows(state.sessions, window))
    return JSONResponse({"from": window.start.isoformat(), "to": window.end.isoformat(), "feedback": rows},
                        headers=_PRIVATE)


@router.get("/feedback.csv", name="admin_feedback_csv")
async def feedback_csv(request: Request, state: StateDep) -> Response:
    """The same rows as ``feedback.json``, as CSV (RFC 4180, UTF-8, a header row)."""
    _authorise(request, state)
    window = _window(request)
    import csv
    import io

    from cds.service.governance import EXPORT_FIELDS, feedback_rows

    rows = await anyio.to_thread.run_sync(lambda: feedback_rows(state.sessions, window))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(value) for key, value in row.items()})
    filename = f"feedback-{window.start.isoformat()}-{window.end.isoformat()}.csv"
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={**_PRIVATE, "Content-Disposition": f'attachment; filename="{filename}"'})


def _cell(value: Any) -> Any:
    """A CSV cell; text a spreadsheet would run as a formula is prefixed with ' (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


_PRIVATE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
