"""``GET /why/{token}``: the "Why this card" page linked from every card (issue 12).

The token is the only credential (:mod:`cds.service.why.tokens`): no token, a wrong one or one for
an evaluation that is not stored gives 404, an expired one 401, each with a page that holds no
patient data. Every answer is ``Cache-Control: no-store`` (a shared EHR workstation must not keep a
copy), sends no referrer and allows no script.
"""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from cds.service.api.deps import StateDep
from cds.service.why.store import load_snapshot
from cds.service.why.tokens import TokenExpired, signer_for

__all__ = ["PAGE_HEADERS", "router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["why"])

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                               "form-action 'self'",
}


def _page(status: int, html: str) -> HTMLResponse:
    # a lone surrogate from the record (valid JSON text, not UTF-8) becomes "?" instead of a 500
    return HTMLResponse(html.encode("utf-8", "replace"), status_code=status, headers=PAGE_HEADERS)


async def _error(status: int, message: str) -> HTMLResponse:
    from cds.service.why.page import render_error

    return _page(status, await anyio.to_thread.run_sync(render_error, status, message))


@router.get("/why", include_in_schema=False)
@router.get("/why/", include_in_schema=False)
async def why_without_token() -> HTMLResponse:
    """No token: the same page as a wrong one (and ``no-store``)."""
    return await _error(404, "No page is available at this address.")


@router.get("/why/{token}", name="why_page", response_class=HTMLResponse)
async def why_page(token: str, state: StateDep) -> HTMLResponse:
    """The page for the one card the token names, built from the stored evaluation."""
    signer = signer_for(state.settings.data_dir)
    try:
        claims = signer.verify(token)
    except TokenExpired:
        return await _error(401, "This link has expired.")
    if claims is None:
        return await _error(404, "No page is available at this address.")
    snapshot = await anyio.to_thread.run_sync(lambda: load_snapshot(state.sessions, claims.evaluation_key,
                                                                    claims.card_uuid))
    if snapshot is None:
        return await _error(404, "No page is available at this address.")
    loaded = state.holder.current()

    def build() -> str:
        from cds.service.why.page import render_page

        return render_page(loaded.rules.ruleset, snapshot, claims.card_uuid, served_digest=loaded.digest)

    try:
        html = await anyio.to_thread.run_sync(build)
    except Exception:
        log.exception("the why page of card %s could not be built", claims.card_uuid)
        return await _error(500, "The page could not be built; the error was logged.")
    return _page(200, html)
