"""Small pieces of the service checked directly: redaction, settings from the environment, caches."""

from __future__ import annotations

import json
import logging
import time

import pytest

from cds.service.bench_http import percentile
from cds.service.config import Settings
from cds.service.redact import REDACTED, RedactingFilter, redact_request, redact_text
from cds.service.security import ReplayCache


def test_redact_request_replaces_only_the_tokens_and_leaves_the_original_alone():
    body = {"hook": "patient-view", "fhirAuthorization": {"access_token": "secret", "token_type": "Bearer",
                                                          "scope": "patient/*.read"}, "prefetch": {"p": {}}}
    clean = redact_request(body)
    assert clean["fhirAuthorization"] == {"access_token": REDACTED, "token_type": "Bearer",
                                          "scope": "patient/*.read"}
    assert body["fhirAuthorization"]["access_token"] == "secret"
    assert clean["prefetch"] == body["prefetch"]


def test_redact_text_catches_json_tokens_bearer_headers_and_jwts():
    text = ('{"access_token": "abc\\"def", "x": 1} Authorization: Bearer tok.en-1 '
            'and eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl')
    clean = redact_text(text)
    for secret in ('abc\\"def', "tok.en-1", "eyJhbGciOiJFUzM4NCJ9"):
        assert secret not in clean
    assert clean.count(REDACTED) == 3


def test_the_log_filter_rewrites_records():
    record = logging.LogRecord("cds", logging.INFO, __file__, 1, "header %s", ("Bearer abc123",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"header Bearer {REDACTED}"


def test_serve_puts_the_filter_on_uvicorn_handlers():
    from cds.service.server import _log_config

    config = _log_config()
    assert all("redact" in h["filters"] for h in config["handlers"].values())


def test_settings_read_json_from_the_environment(monkeypatch, tmp_path):
    jwks = {"keys": [{"kty": "EC", "crv": "P-384", "kid": "k", "x": "x", "y": "y"}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    monkeypatch.setenv("CDS_TRUSTED_ISSUERS", json.dumps({
        "https://sandbox.cds-hooks.org": {"jku": ["https://sandbox.cds-hooks.org/.well-known/jwks.json"],
                                          "jwks_file": str(tmp_path / "jwks.json")}}))
    monkeypatch.setenv("CDS_CORS_ORIGINS", '["https://sandbox.cds-hooks.org"]')
    monkeypatch.setenv("CDS_DATABASE_URL", "postgresql+psycopg://cds@db/cds")
    monkeypatch.setenv("CDS_CLOCK_SKEW_S", "30")
    monkeypatch.setenv("CDS_PUBLIC_BASE_URL", "https://cds.example.org/sir")
    settings = Settings()
    issuer = settings.trusted_issuers["https://sandbox.cds-hooks.org"]
    assert issuer.static_jwks() == jwks and issuer.jku == ["https://sandbox.cds-hooks.org/.well-known/jwks.json"]
    assert settings.cors_origins == ["https://sandbox.cds-hooks.org"]
    assert settings.resolved_database_url() == "postgresql+psycopg://cds@db/cds"
    assert settings.clock_skew_s == 30 and not settings.open_mode


def test_defaults_are_the_embedded_ones(monkeypatch):
    for name in ("CDS_TRUSTED_ISSUERS", "CDS_DATABASE_URL", "CDS_DATA_DIR", "CDS_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.open_mode and settings.cors_origins == []
    assert settings.resolved_database_url().endswith("/.data/cds.sqlite3")
    assert settings.jwt_algorithms == ["ES384", "RS384"]


def test_replay_cache_forgets_expired_entries():
    cache = ReplayCache(max_entries=3)
    now = time.time()
    assert cache.check_and_add("iss", "a", now + 60)
    assert not cache.check_and_add("iss", "a", now + 60)
    assert cache.check_and_add("other", "a", now + 60)  # jti is per issuer
    assert cache.check_and_add("iss", "old", now - 1)  # already expired: kept no longer than needed
    assert cache.check_and_add("iss", "old", now + 60)


@pytest.mark.parametrize(("q", "expected"), [(50, 50), (95, 95), (99, 99), (100, 100), (0, 1)])
def test_percentile_is_nearest_rank(q, expected):
    assert percentile(list(range(1, 101)), q) == expected
