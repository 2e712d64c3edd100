"""Dependencies shared by the routes, as ``Annotated`` aliases so handler signatures stay short."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request

from cds.service.errors import Unauthorized
from cds.service.security import ANONYMOUS, Caller
from cds.service.state import ServiceState

__all__ = ["CallerDep", "StateDep", "endpoint_url", "get_state", "authenticate"]

log = logging.getLogger("cds.service.security")


def get_state(request: Request) -> ServiceState:
    return request.app.state.cds


StateDep = Annotated[ServiceState, Depends(get_state)]


def endpoint_url(request: Request, state: ServiceState) -> str:
    """The URL the client called, as it must appear in the JWT ``aud`` (no query string).

    Behind a proxy the public URL differs from what the server sees; ``CDS_PUBLIC_BASE_URL`` then
    gives the external base and the path below the app's root is appended to it.
    """
    base = state.settings.public_base_url
    if base:
        root = request.scope.get("root_path", "")
        path = request.url.path
        if root and path.startswith(root):
            path = path[len(root):]
        return base + path
    url = request.url
    return f"{url.scheme}://{url.netloc}{url.path}"


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
            return await state.verifier.verify(token.strip(), audience=endpoint_url(request, state))
        except Unauthorized as exc:
            error = exc
    log.warning("refused %s %s: %s", request.method, request.url.path, error.reason)
    raise error


CallerDep = Annotated[Caller, Depends(authenticate)]
