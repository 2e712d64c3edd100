"""The FastAPI application factory: middleware, error handlers, routers, lifecycle.

``create_app`` does the fallible work (checking the rulesets, migrating the database) before the
server accepts a connection, so a broken ruleset or database stops ``cds serve`` with a clear message
instead of serving errors. The rulesets are validated, compiled and their rule tests run in a
throwaway process (:func:`cds.service.holder.prepare_candidate`); durable_rules never runs in this
process. The engine workers start in parallel when the app starts and are not waited for: discovery
answers at once and the first calls queue until a worker is ready.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds.service.api.limits import HeaderLimitMiddleware
from cds.service.admission import Admission
from cds.service.api.main import api_router
from cds.service.api.routes import ops
from cds.service.calls import record_rejected_call
from cds.service.config import Settings
from cds.service.db import make_engine, make_sessionmaker, migrate
from cds.service.errors import InternalError, ServiceError, Unauthorized, operation_outcome
from cds.service.fhir import FhirClient
from cds.service.holder import EngineHolder, ServedRules, load_rules, pool_factory
from cds.service.metrics import ServiceMetrics
from cds.service.redact import install_log_redaction
from cds.service.security import JwtVerifier
from cds.service.replay import DatabaseReplayCache
from cds.service.ssrf import FhirServerPolicy
from cds.service.state import ServiceState

__all__ = ["create_app", "load_rules", "make_pool_factory"]

log = logging.getLogger("cds.service")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}


def _outcome_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/fhir+json")


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        route = request.scope.get("route")
        if getattr(route, "name", None) == "call_service":
            service_id = request.path_params.get("service_id", "?")
            if isinstance(exc, Unauthorized):
                await record_rejected_call(request.app.state.cds, service_id, exc)
            request.app.state.metrics.observe_call(service_id, exc.status_code, 0.0, ())
        return _outcome_response(exc.status_code, exc.body(), exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        body = operation_outcome(message, code=_HTTP_CODES.get(exc.status_code, "processing"))
        return _outcome_response(exc.status_code, body, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query"))
        body = operation_outcome(str(first.get("msg", "invalid request")), code="invalid", expression=field or None)
        return _outcome_response(400, body)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        error = InternalError()
        return _outcome_response(error.status_code, error.body())


def make_pool_factory(settings: Settings) -> Any:
    """``(ruleset, blob) -> WorkerPool`` with the settings' size, deadlines, bound and quarantine."""
    return pool_factory(size=settings.resolved_engine_workers(), timeout_s=settings.engine_timeout_s,
                        max_pending=settings.max_pending_evaluations, include_drafts=settings.include_drafts,
                        start_timeout_s=settings.engine_start_timeout_s, quarantine_after=settings.quarantine_after,
                        quarantine_s=settings.quarantine_s)


def create_app(settings: Settings | None = None, *, engine: Any | None = None, evaluator: Any | None = None,
               rules: tuple[Any, bytes] | None = None) -> FastAPI:
    """Build the app.

    * ``rules``: ``(ServedRules, pickled RuleSet)`` already checked (``cds serve`` passes what
      :func:`load_rules` returned); if omitted, :func:`load_rules` runs here.
    * ``engine``: an already loaded :class:`cds.engine.Engine` (tests): its RuleSet is served, in
      worker processes, without the start-up check.
    * ``evaluator``: a stand-in evaluator (tests: :class:`cds.workers.InProcessEvaluator` around a
      failing or slow engine); ``engine`` then provides the rules.

    Raises :class:`cds._exceptions.RulesetError` when the rulesets do not validate and SQLAlchemy /
    Alembic errors when the database cannot be reached or migrated.
    """
    import pickle

    settings = settings or Settings()
    install_log_redaction()
    if engine is not None:
        served: Any = engine if evaluator is not None else ServedRules(engine.ruleset, engine.include_drafts)
        blob = pickle.dumps(engine.ruleset, protocol=pickle.HIGHEST_PROTOCOL) if evaluator is None else b""
    elif rules is not None:
        served, blob = rules
    else:
        served, blob = load_rules(settings)
    db = make_engine(settings.resolved_database_url())
    if settings.database_auto_migrate:
        migrate(db)
    make_evaluator = make_pool_factory(settings)
    if evaluator is None:
        evaluator = make_evaluator(served.ruleset, blob)
    holder = EngineHolder(EngineHolder.loaded(served, evaluator),
                          directory=settings.rulesets or served.ruleset.directory, make_evaluator=make_evaluator,
                          include_drafts=settings.include_drafts, run_rule_tests=True,
                          ready_timeout_s=settings.engine_start_timeout_s,
                          check_timeout_s=settings.ruleset_check_timeout_s)
    state = ServiceState(settings=settings, holder=holder, db=db, sessions=make_sessionmaker(db),
                         admission=Admission(settings.resolved_active_calls()))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.holder.current().evaluator.start()  # workers start in parallel; not waited for
        state.fhir = FhirClient(
            connect_timeout=settings.fhir_connect_timeout_s, read_timeout=settings.fhir_read_timeout_s,
            max_pages=settings.fhir_max_pages, allow_http=settings.fhir_allow_http,
            policy=FhirServerPolicy.build(open_mode=settings.open_mode,
                                          allowed_networks=settings.fhir_allowed_networks),
        )
        state.http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
        if settings.open_mode:
            log.warning("OPEN MODE: no trusted issuers configured (CDS_TRUSTED_ISSUERS); calls are not "
                        "authenticated. Use only on loopback for development.")
        else:
            shared = DatabaseReplayCache(state.sessions) if settings.replay_cache == "database" else None
            state.verifier = JwtVerifier(settings, client=state.http, shared_replays=shared)
        log.info("CDS service ready: rulesets %s, %d service(s), %d engine worker(s) starting",
                 state.holder.current().digest, len(state.holder.current().catalog),
                 state.holder.current().evaluator.size)
        watcher = None
        if settings.reload_watch:
            from cds.service.holder import RulesetWatcher

            watcher = RulesetWatcher(state.holder).start()
            log.info("watching %s: changes go live once they validate and their tests pass", state.holder.directory)
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            await state.fhir.aclose()
            await state.http.aclose()
            await anyio.to_thread.run_sync(state.holder.close)
            db.dispose()

    app = FastAPI(
        title="SIR CDS Hooks service",
        description="CDS Hooks 2.0 service for severe insulin resistance and lipodystrophy care pathways.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.cds = state
    app.state.metrics = ServiceMetrics(engine_stats=lambda: state.holder.current().evaluator.stats())
    _cors_guidance(settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "accept"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(HeaderLimitMiddleware, max_bytes=settings.max_header_bytes)  # h10a: 431, not h11's 400
    _install_handlers(app)
    app.include_router(api_router)
    app.include_router(ops.router)
    return app


_LOOPBACK_ALIASES = ("localhost", "127.0.0.1", "[::1]")


def _cors_guidance(origins: list[str]) -> list[str]:
    """Warn about loopback origins listed under one name only; returns the warnings.

    A browser's ``Origin`` is exactly what its address bar says: a sandbox opened at
    ``http://localhost:8701`` sends that, not ``http://127.0.0.1:8701``, and a CORS list with only the
    other spelling makes the browser drop every answer (the sandbox then silently shows no services).
    """
    from urllib.parse import urlsplit

    listed = set(origins)
    warnings: list[str] = []
    for origin in origins:
        parts = urlsplit(origin)
        host = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
        if host not in _LOOPBACK_ALIASES:
            continue
        port = f":{parts.port}" if parts.port else ""
        missing = [f"{parts.scheme}://{alias}{port}" for alias in _LOOPBACK_ALIASES[:2] if alias != host
                   and f"{parts.scheme}://{alias}{port}" not in listed]
        for other in missing:
            message = (f"CDS_CORS_ORIGINS lists {origin} but not {other}: a browser opened at {other} sends "
                       f"that Origin and gets no CORS headers (the client shows no services); list both "
                       "spellings if both are used")
            log.warning("%s", message)
            warnings.append(message)
    return warnings
