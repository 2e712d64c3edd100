"""Everything a request needs, built once per app and kept on ``app.state.cds``."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy import Engine as DbEngine
from sqlalchemy.orm import Session, sessionmaker

from cds.service.admission import Admission
from cds.service.config import Settings
from cds.service.fhir import FhirClient
from cds.service.holder import EngineHolder
from cds.service.security import JwtVerifier

__all__ = ["ServiceState"]


@dataclass
class ServiceState:
    """Settings, the rules and their engine workers (``holder``), the database, the HTTP clients."""

    settings: Settings
    holder: EngineHolder
    db: DbEngine
    sessions: sessionmaker[Session]
    fhir: FhirClient | None = None
    http: httpx.AsyncClient | None = None  # JWKS fetches
    verifier: JwtVerifier | None = None
    admission: Admission | None = None  # turns for the CPU work of calls (cds.service.admission)
