"""Operations: /healthz, /readyz, /metrics, /openapi.json, /docs; aud never from the Host header; CORS
guidance; log redaction and JSON logs in the output of a real ``cds serve``."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from cds.service.config import IssuerConfig, Settings
from cds.service.db import make_engine
from cds.service.metrics import record_audit_failure

from svc_support import ec_key, full_prefetch, hook_request, make_token, patient_resources, stop_process

ISS = "https://ehr.example.org"
EC = ec_key("ec-ops")


def _wait_ready(service, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = service.client.get("/readyz")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample in ``text`` (labels: all must match), or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_healthz_and_readyz(start_service):
    service = start_service()
    assert service.client.get("/healthz").json() == {"status": "alive"}
    ready = _wait_ready(service)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready" and ready.json()["services"] == 3
    # the database goes away (a real engine to a port where nothing listens): not ready, with the reason
    service.state.db = make_engine("postgresql+psycopg://cds@127.0.0.1:1/cds?connect_timeout=1")
    refused = service.client.get("/readyz")
    assert refused.status_code == 503
    assert any(r.startswith("database: unreachable") for r in refused.json()["reasons"]), refused.text
    assert service.client.get("/healthz").status_code == 200  # alive all the same


def test_readyz_reports_engine_workers_not_ready(start_service):
    service = start_service()
    _wait_ready(service)
    loaded = service.state.holder.current()
    loaded.evaluator.close(graceful=False, timeout=10)
    response = service.client.get("/readyz")
    assert response.status_code == 503
    assert any(r.startswith("engine: 0 of") for r in response.json()["reasons"]), response.text


def test_metrics_count_calls_cards_engine_and_audit_failures(start_service):
    service = start_service()
    _wait_ready(service)
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    body = hook_request("patient-view", "m1", prefetch=full_prefetch(templates, patient_resources("m1", insulin=400)))
    response = service.client.post("/cds-services/sir-patient-view", json=body)
    assert response.status_code == 200
    cards = response.json()["cards"]
    assert service.client.post("/cds-services/sir-patient-view", content=b"{", headers={
        "content-type": "application/json"}).status_code == 400
    record_audit_failure()
    scrape = service.client.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    assert _sample(text, "cds_calls_total", service="sir-patient-view", status="200") == 1
    assert _sample(text, "cds_calls_total", service="sir-patient-view", status="400") == 1
    assert _sample(text, "cds_call_latency_seconds_count", service="sir-patient-view") == 2
    assert cards, "the test patient should get at least one card"
    for card in cards:
        rule = card["source"]["topic"]["code"]
        assert _sample(text, "cds_cards_total", rule=rule, indicator=card["indicator"]) >= 1
    assert _sample(text, "cds_audit_failures_total") == 1
    assert _sample(text, "cds_engine_restarts_total") == 0
    assert _sample(text, "cds_engine_queue_depth") == 0
    assert _sample(text, "cds_engine_ready") == 1


def test_metrics_outside_open_mode_need_the_admin_token(start_service):
    service = start_service(trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]})}, admin_token="adm-secret-1")
    assert service.client.get("/metrics").status_code == 403
    assert service.client.get("/metrics", headers={"Authorization": "Bearer adm-secret-1"}).status_code == 200


def test_openapi_and_docs_answer_in_open_mode(start_service):
    service = start_service()
    spec = service.client.get("/openapi.json")
    assert spec.status_code == 200
    assert "/cds-services/{service_id}" in spec.json()["paths"]
    docs = service.client.get("/docs")
    assert docs.status_code == 200 and "SwaggerUIBundle" in docs.text and "/cds-services/{service_id}" in docs.text


def test_openapi_and_docs_are_behind_the_jwt_outside_open_mode(start_service):
    service = start_service(trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]})})
    assert service.client.get("/openapi.json").status_code == 401
    assert service.client.get("/docs").status_code == 401
    for path in ("/openapi.json", "/docs"):
        token = make_token(EC, iss=ISS, aud=service.url + path)
        assert service.client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200


# -- aud ----------------------------------------------------------------------------------------------

def test_a_public_url_is_required_outside_open_mode():
    with pytest.raises(ValidationError, match="CDS_PUBLIC_BASE_URL"):
        Settings(trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]})})
    Settings(trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]})}, accepted_audiences=["https://a.example"])


def test_aud_is_never_taken_from_the_host_header(start_service):
    service = start_service(trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]})},
                            public_base_url="https://cds.example.org/sir",
                            accepted_audiences=["https://cds-b.example.org/"])
    spoofed = make_token(EC, iss=ISS, aud="http://evil.example.org/cds-services")
    assert service.client.get("/cds-services", headers={"Host": "evil.example.org",
                                                         "Authorization": f"Bearer {spoofed}"}).status_code == 401
    for public in ("https://cds.example.org/sir", "https://cds-b.example.org"):
        token = make_token(EC, iss=ISS, aud=public + "/cds-services")
        assert service.client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_cors_loopback_spelling_is_warned_about(caplog):
    from cds.service.app import _cors_guidance

    with caplog.at_level(logging.WARNING, logger="cds.service"):
        warnings = _cors_guidance(["http://localhost:8701", "https://sandbox.cds-hooks.org"])
    assert len(warnings) == 1 and "http://127.0.0.1:8701" in warnings[0]
    assert "http://127.0.0.1:8701" in caplog.text
    assert _cors_guidance(["http://localhost:8701", "http://127.0.0.1:8701"]) == []


# -- logs of a real cds serve ----------------------------------------------------------------------------

_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
JWT_LIKE = "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJldmlsIn0.c2lnbmF0dXJlLXNlY3JldA"


def _serve(tmp_path: Path, log_format: str) -> tuple[str, int]:
    """Run cds serve (secure mode), send calls that log tokens, stop it; (log text, exit status)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({"CDS_TRUSTED_ISSUERS": json.dumps({ISS: {"jwks": {"keys": [EC.jwk]}}}),
                "CDS_PUBLIC_BASE_URL": "https://cds.example.org", "CDS_LOG_FORMAT": log_format})
    log_path = tmp_path / f"serve-{log_format}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "cds.service", "--port", "0", "--workers", "1",
                                    "--data-dir", str(tmp_path / log_format), "--log-level", "info"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (found := _RUNNING.search(log_path.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        url = f"http://127.0.0.1:{found.group(1)}"
        assert httpx.get(f"{url}/cds-services?access_token={JWT_LIKE}").status_code == 401  # no bearer token
        assert httpx.get(f"{url}/cds-services", headers={"Authorization": f"Bearer {JWT_LIKE}"}).status_code == 401
        assert httpx.get(f"{url}/healthz?note=Bearer%20tok-123-secret").status_code == 200
        time.sleep(0.5)
    finally:
        stop_process(process)
    return log_path.read_text(), process.returncode


def test_access_lines_are_kept_with_tokens_redacted_and_own_messages_intact(tmp_path):
    output, status = _serve(tmp_path, "text")
    assert status == 0, output
    assert "Logging error" not in output and "Traceback" not in output, output
    assert JWT_LIKE not in output and "tok-123-secret" not in output
    access = [line for line in output.splitlines() if '"GET /' in line]
    assert any("/cds-services?access_token=[redacted]" in line and " 401" in line for line in access), output
    assert any("/healthz?note=Bearer%20[redacted]" in line and " 200" in line for line in access), output
    assert "refused GET /cds-services: no bearer token" in output  # not "no bearer [redacted]"


def test_json_logs(tmp_path):
    output, status = _serve(tmp_path, "json")
    assert status == 0, output
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert entries, output
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert {e["status"] for e in access} >= {401, 200}
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    assert any(e["path"] == "/cds-services?access_token=[redacted]" for e in access)
    assert JWT_LIKE not in output
    assert any(e["message"] == "refused GET /cds-services: no bearer token" for e in entries)


def test_the_filter_keeps_the_shape_of_access_records_and_leaves_prose_alone():
    from cds.service.redact import REDACTED, RedactingFilter

    args = ("127.0.0.1:5000", "GET", f"/x?t={JWT_LIKE}", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)
    assert RedactingFilter().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5 and record.args[4] == 200
    assert record.args[2] == f"/x?t={REDACTED}"
    prose = logging.LogRecord("cds", logging.WARNING, __file__, 1, "refused %s %s: %s",
                              ("GET", "/cds-services", "no bearer token"), None)
    RedactingFilter().filter(prose)
    assert prose.getMessage() == "refused GET /cds-services: no bearer token"
