"""Dependencies shared by the routes, as ``Annotated`` aliases so handler signatures stay short."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request

from cds.service.errors import Unauthorized
from cds.service.security import ANONYMOUS, Caller
from cds.service.state import ServiceState

__all__ = ["CallerDep", "StateDep", "authenticate", "endpoint_url", "endpoint_urls", "get_state"]

log = logging.getLogger("cds.service.security")


def get_state(request: Request) -> ServiceState:
    return request.app.state.cds


StateDep = Annotated[ServiceState, Depends(get_state)]


def endpoint_urls(request: Request, state: ServiceState) -> list[str]:
    """The URLs a JWT ``aud`` may name for this call (no query string).

    Each configured base (``CDS_PUBLIC_BASE_URL``, then ``CDS_ACCEPTED_AUDIENCES``) with the path
    below the app's root appended. Never the Host header: a client chooses that, so checking ``aud``
    against it would accept a token minted for any other service (the settings require a base
    outside open mode).
    """
    settings = state.settings
    bases = ([settings.public_base_url] if settings.public_base_url else []) + list(settings.accepted_audiences)
    root = request.scope.get("root_path", "")
    path = request.url.path
    if root and path.startswith(root):
        path = path[len(root):]
    return [base + path for base in bases]


def endpoint_url(request: Request, state: ServiceState) -> str:
    """The first accepted ``aud`` of this call (the public URL), for messages."""
    urls = endpoint_urls(request, state)
    return urls[0] if urls else str(request.url.path)


async def authenticate(request: Request, state: StateDep) -> Caller:
    """The verified caller; in open mode (no trusted issuers) everyone is anonymous."""
    if state.verifier is None:
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        error = Unauthorized("no bearer token")
    else:
        try:
            return await state.verifier.verify(token.strip(), audience=endpoint_urls(request, state))
        except Unauthorized as exc:
            error = exc
    log.warning("refused %s %s: %s", request.method, request.url.path, error.reason)
    raise error


CallerDep = Annotated[Caller, Depends(authenticate)]
