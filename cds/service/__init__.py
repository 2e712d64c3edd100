"""The CDS Hooks 2.0 HTTP service (``cds serve``): discovery, service calls, feedback, audit.

Layout: ``app`` (factory), ``api/`` (routers and dependencies), ``calls`` (one call end to end),
``prefetch`` + ``fhir`` (filling in missing data), ``security`` (JWT), ``config`` (settings),
``models`` + ``crud`` + ``db`` + ``migrations/`` (persistence), ``holder`` (the rules served, their
engine worker pool and safe reload; see :mod:`cds.workers`), ``server`` (start-up and ``cds serve``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cds.service.app import create_app
    from cds.service.config import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    """``create_app`` and ``Settings`` on first use: importing a submodule (``cds serve`` starts with
    :mod:`cds.service.server`) must not pull in the whole web stack before the rules check has begun."""
    if name == "create_app":
        from cds.service.app import create_app

        return create_app
    if name == "Settings":
        from cds.service.config import Settings

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
