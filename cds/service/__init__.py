"""The CDS Hooks 2.0 HTTP service (``cds serve``): discovery, service calls, feedback, audit.

Layout: ``app`` (factory), ``api/`` (routers and dependencies), ``calls`` (one call end to end),
``prefetch`` + ``fhir`` (filling in missing data), ``security`` (JWT), ``config`` (settings),
``models`` + ``crud`` + ``db`` + ``migrations/`` (persistence), ``holder`` (the rules served, their
engine worker pool and safe reload; see :mod:`cds.workers`), ``server`` (start-up and ``cds serve``).
"""

from __future__ import annotations

from cds.service.app import create_app
from cds.service.config import Settings

__all__ = ["Settings", "create_app"]
