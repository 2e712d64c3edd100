"""Request-header size limit answered with an OperationOutcome (431) before any route or auth runs.

Why here: uvicorn's HTTP/1.1 parser (h11) refuses request heads over its own buffer limit (16 KiB by
default, ``h11_max_incomplete_event_size``) with a bare plain-text 400 and a closed connection, before
the application sees anything; nothing in the app can change that answer. Below that limit this
middleware refuses heads over ``CDS_MAX_HEADER_BYTES`` (8 KiB by default: a CDS Hooks JWT is ~1 KiB)
with ``431 Request Header Fields Too Large`` and a FHIR OperationOutcome, so an oversized token is told
what is wrong in the service's own format instead of reaching the JWT verifier.
"""

from __future__ import annotations

import json
from typing import Any

from cds.service.errors import operation_outcome

__all__ = ["HeaderLimitMiddleware"]


class HeaderLimitMiddleware:
    """Pure ASGI middleware (no body buffering): counts the header bytes of each HTTP request."""

    def __init__(self, app: Any, *, max_bytes: int = 8192) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))
            if size > self.max_bytes:
                body = json.dumps(operation_outcome(
                    f"request headers of {size} bytes are over the {self.max_bytes}-byte limit",
                    code="too-costly")).encode()
                await send({"type": "http.response.start", "status": 431,
                            "headers": [(b"content-type", b"application/fhir+json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
