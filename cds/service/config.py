"""Service settings: one ``Settings(BaseSettings)`` read from ``CDS_*`` environment variables.

Why environment variables: the service runs in containers and behind process managers where a
config file is one more thing to mount. Every field has a safe embedded default so ``cds serve``
works with nothing configured (built-in rulesets, SQLite under ``./.data``, open mode on loopback).
Complex values (issuers, CORS origins) are JSON, e.g.::

    CDS_TRUSTED_ISSUERS='{"https://sandbox.cds-hooks.org":
        {"jku": ["https://sandbox.cds-hooks.org/.well-known/jwks.json"], "jwks_file": "sandbox-jwks.json"}}'
    CDS_CORS_ORIGINS='["https://sandbox.cds-hooks.org"]'
    CDS_PUBLIC_BASE_URL=https://cds.example.org     # required with trusted issuers: the JWT aud

Each issuer may list the FHIR servers its clients may name (``"fhir_servers": ["https://ehr.example.org/fhir"]``);
without that list no FHIR fallback fetch is made for its calls (412).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import SecretStr, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ALLOWED_ALGORITHMS", "IssuerConfig", "Settings"]

# CDS Hooks 2.0 "Trusting CDS Clients": asymmetric signatures only, ES384/RS384 recommended;
# "none" and HMAC (shared secrets) are never acceptable.
ALLOWED_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


class IssuerConfig(BaseModel):
    """Where the public keys of one trusted issuer (``iss``) come from.

    * ``jku``: allow-list of JWKS URLs a token may name in its ``jku`` header; they are fetched
      (cached, refreshed on an unknown ``kid``). A token whose ``jku`` is not listed is refused.
    * ``jwks_url``: a JWKS URL configured out of band, used when the token has no ``jku``.
    * ``jwks`` / ``jwks_file``: the keys themselves (inline JSON or a file), never fetched; this is
      how to trust the CDS Hooks sandbox when its ``jku`` is unreachable.
    """

    model_config = ConfigDict(extra="forbid")

    jku: list[str] = Field(default_factory=list)
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_file: Path | None = None
    # h10b: the FHIR base URLs this issuer's clients may name as fhirServer (equal, or below one);
    # any other fhirServer is refused (412) before a connection is made and the token is never sent
    fhir_servers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_keys(self) -> IssuerConfig:
        if not (self.jku or self.jwks_url or self.jwks or self.jwks_file):
            raise ValueError("a trusted issuer needs jku, jwks_url, jwks or jwks_file")
        return self

    def static_jwks(self) -> dict[str, Any] | None:
        """The locally configured JWKS (inline wins over file), or None."""
        if self.jwks is not None:
            return self.jwks
        if self.jwks_file is not None:
            return json.loads(self.jwks_file.read_text(encoding="utf-8"))
        return None


class Settings(BaseSettings):
    """Every knob of the HTTP service; field ``x`` is read from ``CDS_X``."""

    model_config = SettingsConfigDict(env_prefix="CDS_", env_file=None, extra="ignore", env_ignore_empty=True)

    # -- storage --------------------------------------------------------------------------------
    data_dir: Path = Path(".data")  # SQLite file and other local state (gitignored)
    database_url: str | None = None  # default: sqlite:///<data_dir>/cds.sqlite3
    database_auto_migrate: bool = True  # run Alembic "upgrade head" at startup

    # -- rules ----------------------------------------------------------------------------------
    rulesets: Path | None = None  # default: the built-in rulesets/
    include_drafts: bool = False  # drafts never fire unless this is set explicitly
    rule_tests_on_start: bool = True  # refuse to start when a rule's own tests fail (~5 s)
    reload_watch: bool = False  # reload (validated + tested) when files under the rulesets change
    admin_token: SecretStr | None = None  # Bearer token for /admin/*; unset: loopback clients only

    # -- security -------------------------------------------------------------------------------
    trusted_issuers: dict[str, IssuerConfig] = Field(default_factory=dict)  # empty = open mode
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["ES384", "RS384"])
    clock_skew_s: int = Field(default=60, ge=0, le=600)
    max_token_lifetime_s: int = Field(default=3600, ge=60)  # exp - iat; the spec suggests 5 minutes
    jwks_cache_ttl_s: int = Field(default=3600, ge=0)
    jwks_min_refresh_interval_s: float = Field(default=30.0, ge=0)  # unknown-kid refresh rate limit
    public_base_url: str | None = None  # e.g. https://cds.example.org/sir (for aud behind proxies)
    cors_origins: list[str] = Field(default_factory=list)

    # -- FHIR server fallback -------------------------------------------------------------------
    fhir_connect_timeout_s: float = Field(default=5.0, gt=0)
    fhir_read_timeout_s: float = Field(default=10.0, gt=0)
    fhir_total_timeout_s: float = Field(default=20.0, gt=0)  # all fetches of one request
    fhir_max_pages: int = Field(default=20, ge=1)  # next-link pages followed per prefetch key
    fhir_allow_http: bool = False  # plain http only for loopback FHIR servers unless this is set

    # -- load -----------------------------------------------------------------------------------
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)  # 413 beyond (a Synthea prefetch is ~1-3 MB)
    max_pending_evaluations: int = Field(default=64, ge=1)  # beyond this: 503 with Retry-After

    # -- engine workers (cds.workers) -------------------------------------------------------------
    engine_workers: int | None = Field(default=None, ge=1, le=256)  # processes; default: one per core
    engine_timeout_s: float = Field(default=10.0, gt=0)  # per call on a worker; past it: killed, 503
    engine_start_timeout_s: float = Field(default=120.0, gt=0)  # one worker compiling its rules
    quarantine_s: float = Field(default=600.0, ge=0)  # how long a payload that crashed workers is refused
    quarantine_after: int = Field(default=2, ge=1)  # workers lost to one payload before its quarantine
    ruleset_check_timeout_s: float = Field(default=600.0, gt=0)  # validation + rule tests (start, reload)

    # h10b: fhir servers, replicas, operations ----------------------------------------------------
    # CIDRs of private/loopback networks where listed FHIR servers may live (e.g. ["10.20.0.0/16"]);
    # link-local and cloud-metadata addresses are refused whatever this says
    fhir_allowed_networks: list[str] = Field(default_factory=list)
    # every URL accepted as a JWT ``aud`` besides CDS_PUBLIC_BASE_URL + path (e.g. a second DNS name);
    # base URLs: the called path is appended
    accepted_audiences: list[str] = Field(default_factory=list)
    replay_cache: str = Field(default="database", pattern="^(database|memory)$")  # jti cache: shared or per process
    log_format: str = Field(default="text", pattern="^(text|json)$")  # json: one JSON object per log line
    metrics_enabled: bool = True  # GET /metrics (Prometheus text format)

    @field_validator("fhir_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad one
        return value

    @field_validator("accepted_audiences")
    @classmethod
    def _strip_slashes(cls, value: list[str]) -> list[str]:
        return [v.rstrip("/") for v in value]

    @model_validator(mode="after")
    def _audience_configured(self) -> Settings:
        """Outside open mode ``aud`` is checked against configured URLs, never the Host header."""
        if self.trusted_issuers and not (self.public_base_url or self.accepted_audiences):
            raise ValueError("CDS_PUBLIC_BASE_URL (or CDS_ACCEPTED_AUDIENCES) is required when "
                             "CDS_TRUSTED_ISSUERS is set: the JWT aud is checked against it, never the Host header")
        return self
    # h10a: audit and input limits
    queue_deadline_s: float = Field(default=5.0, gt=0)  # waited longer (arrival to engine start, FHIR excepted): 503
    # calls parsed/checked at once in this process (cds.service.admission); default: 2 per engine worker
    max_active_calls: int | None = Field(default=None, ge=1, le=10_000)
    audit_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)  # body kept in the audit; beyond: truncated
    audit_timeout_s: float = Field(default=10.0, gt=0)  # audit write not committed by then: 503, no cards
    max_json_depth: int = Field(default=64, ge=8)  # deeper nesting: 400 (FHIR resources need ~12)
    max_number_magnitude: float = Field(default=1e15, gt=0)  # |number| above: 400 before the engine
    max_header_bytes: int = Field(default=8192, ge=1024)  # request head above: 431 (uvicorn: plain 400 > 16 KiB)

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in ALLOWED_ALGORITHMS]
        if bad:
            raise ValueError(f"algorithms {bad} are not allowed (asymmetric only: {sorted(ALLOWED_ALGORITHMS)})")
        if not value:
            raise ValueError("at least one algorithm is needed")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def open_mode(self) -> bool:
        """No trusted issuer configured: calls are not authenticated (loopback only)."""
        return not self.trusted_issuers

    def resolved_active_calls(self) -> int:
        """``CDS_MAX_ACTIVE_CALLS`` or two per engine worker (one parsing while the other is evaluated)."""
        return self.max_active_calls or 2 * self.resolved_engine_workers()

    def resolved_engine_workers(self) -> int:
        """``CDS_ENGINE_WORKERS`` or one worker per core this process may use."""
        from cds.workers.pool import default_worker_count

        return self.engine_workers or default_worker_count()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cds.sqlite3').resolve()}"
