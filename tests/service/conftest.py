"""Fixtures for the HTTP service tests: the engine, real servers on 127.0.0.1, the databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds.engine import Engine
from cds.service.app import create_app
from cds.service.config import Settings

from svc_support import FhirStore, ServerThread, bound_socket, fhir_app

# The CI PostgreSQL server; CDS_TEST_PG_DSN points the tests at another one (libpq URL form).
PG_DSN = os.environ.get("CDS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The built-in rulesets, loaded once (they are immutable once loaded)."""
    return Engine.load()


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[tuple[ServerThread, FhirStore]]:
    store = FhirStore()
    with ServerThread(fhir_app(store)) as server:
        yield server, store


@pytest.fixture()
def fhir(fhir_server: tuple[ServerThread, FhirStore]) -> tuple[str, FhirStore]:
    """(FHIR base URL, store) with the store emptied for this test."""
    server, store = fhir_server
    store.resources.clear()
    store.requests.clear()
    store.fail_types.clear()
    store.page_size = 2
    store.jwks = {"keys": []}
    store.jwks_fetches = 0
    return f"{server.url}/fhir", store


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh schema on the CI PostgreSQL server, dropped afterwards; skipped when there is none."""
    try:
        import psycopg

        admin = psycopg.connect(PG_DSN, connect_timeout=3, autocommit=True)
    except Exception as exc:  # no server, auth refused, database missing: say which
        pytest.skip(f"PostgreSQL not reachable at {PG_DSN} (CI: 127.0.0.1:5432, user postgres, database test): "
                    f"{' '.join(str(exc).split())}")
    schema = f"cds_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on PostgreSQL (skipped with a reason when absent)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    url = request.getfixturevalue("pg_url")
    _truncate(url)
    return url


def _truncate(url: str) -> None:
    from sqlalchemy import inspect, text

    from cds.service.db import make_engine

    db = make_engine(url)
    try:
        with db.begin() as conn:
            present = set(inspect(conn).get_table_names())
            tables = [t for t in ("cds_feedback", "cds_card", "cds_call") if t in present]
            if tables:
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    finally:
        db.dispose()


class Service:
    """A running service: its base URL, app (for database access) and an httpx client."""

    def __init__(self, thread: ServerThread, app: Any) -> None:
        self.thread = thread
        self.app = app
        self.url = thread.url
        self.client = httpx.Client(base_url=thread.url, timeout=30)

    @property
    def state(self) -> Any:
        return self.app.state.cds


class ServiceFactory:
    """Starts services and stops them all at the end of its scope."""

    def __init__(self, engine: Engine, data_root: Path) -> None:
        self.engine = engine
        self.data_root = data_root
        self.running: list[tuple[ServerThread, Service]] = []

    def __call__(self, *, engine_override: Any = None, **settings: Any) -> Service:
        """``engine_override``: a stand-in engine (slow, failing) run in-process by InProcessEvaluator;
        otherwise the real rules run in engine worker processes (one by default: the machine is shared)."""
        from cds.workers import InProcessEvaluator

        settings.setdefault("data_dir", self.data_root / f"data{len(self.running)}")
        settings.setdefault("engine_workers", 1)
        sock = bound_socket()
        if settings.get("trusted_issuers"):  # aud is checked against the public URL: this server's own
            settings.setdefault("public_base_url", f"http://127.0.0.1:{sock.getsockname()[1]}")
        config = Settings(**settings)
        evaluator = None
        if engine_override is not None:
            evaluator = InProcessEvaluator(engine_override, max_pending=config.max_pending_evaluations)
        app = create_app(config, engine=engine_override or self.engine, evaluator=evaluator)
        thread = ServerThread(app, sock).__enter__()
        service = Service(thread, app)
        self.running.append((thread, service))
        return service

    def stop_all(self) -> None:
        for thread, service in self.running:
            service.client.close()
            thread.__exit__(None, None, None)


@pytest.fixture()
def start_service(engine: Engine, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start a service with the given settings (SQLite under tmp_path unless database_url is given)."""
    factory = ServiceFactory(engine, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_services(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceFactory]:
    """Like start_service, for services shared by a whole test module."""
    factory = ServiceFactory(engine, tmp_path_factory.mktemp("services"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def service(module_services: ServiceFactory) -> Service:
    """Open mode (no JWT), SQLite: the embedded defaults. Shared by the module: tests that read the
    database select their own rows (by hookInstance or patient id)."""
    return module_services()
