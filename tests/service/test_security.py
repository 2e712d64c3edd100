"""JWT authentication per CDS Hooks 2.0 "Trusting CDS Clients", and CORS for browser clients."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from cds.service.config import IssuerConfig
from cds.service.models import CallRecord

from svc_support import (
    ec_key,
    full_prefetch,
    hmac_token,
    hook_request,
    make_token,
    patient_resources,
    rsa_key,
    tamper,
    unsigned_token,
)

ISS = "https://ehr.example.org"
RSA_ISS = "https://epic.example.org"
SANDBOX = "https://sandbox.cds-hooks.org"

EC = ec_key("ec-1")
EC_AT_JKU = ec_key("ec-at-jku")
RSA = rsa_key("rsa-1")


@pytest.fixture(scope="module")
def secure_service(module_services, fhir_server):
    """A service trusting ISS (inline JWKS + a jku on the test server) and RSA_ISS (RS384)."""
    server, store = fhir_server
    jku = server.url + "/jwks.json"
    service = module_services(
        trusted_issuers={
            ISS: IssuerConfig(jwks={"keys": [EC.jwk]}, jku=[jku]),
            RSA_ISS: IssuerConfig(jwks={"keys": [RSA.jwk]}),
        },
        clock_skew_s=60,
        jwks_min_refresh_interval_s=0,
    )
    service.jku = jku
    service.store = store
    return service


@pytest.fixture()
def secure(secure_service, fhir):
    """The shared secure service, its JWKS endpoint reset to serve EC_AT_JKU; the JWKS cache emptied."""
    _base, store = fhir
    store.jwks = {"keys": [EC_AT_JKU.jwk]}
    secure_service.state.verifier.jwks._entries.clear()
    return secure_service


def call(service, token: str | None, path: str = "/cds-services/sir-patient-view", body: dict | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is None and path.endswith("/cds-services"):
        return service.client.get(path, headers=headers)
    if body is None:
        templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
        body = hook_request("patient-view", "s1", prefetch=full_prefetch(templates, patient_resources("s1")))
    return service.client.post(path, json=body, headers=headers)


def aud(service, path: str = "/cds-services/sir-patient-view") -> str:
    return service.url + path


def assert_refused(response) -> None:
    """401 with a body that says nothing about why."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "login", "diagnostics": "unauthorized"}]}


def test_valid_es384_token_opens_discovery_and_calls(secure):
    response = call(secure, make_token(EC, iss=ISS, aud=aud(secure, "/cds-services")), "/cds-services")
    assert response.status_code == 200
    response = call(secure, make_token(EC, iss=ISS, aud=aud(secure)))
    assert response.status_code == 200, response.text
    assert response.json()["cards"][0]["source"]["topic"]["code"] == "sir-suspected"


def test_valid_rs384_token(secure):
    assert call(secure, make_token(RSA, iss=RSA_ISS, aud=aud(secure))).status_code == 200


def test_every_call_needs_a_token_discovery_and_feedback_too(secure):
    assert_refused(call(secure, None, "/cds-services"))
    assert_refused(call(secure, None))
    assert_refused(secure.client.post("/cds-services/sir-patient-view/feedback", json={"feedback": []}))
    assert_refused(secure.client.get("/cds-services", headers={"Authorization": "Basic dXNlcjpwYXNz"}))


@pytest.mark.parametrize("case", [
    "tampered", "expired", "wrong-audience", "discovery-audience", "alg-none", "hmac-with-public-key",
    "unknown-issuer", "unknown-kid", "kid-of-other-issuer", "jku-not-allowed", "future-iat", "too-long-lived",
    "no-jti", "garbage",
])
def test_bad_tokens_are_refused(secure, case):
    good_aud = aud(secure)
    token = {
        "tampered": lambda: tamper(make_token(EC, iss=ISS, aud=good_aud)),
        "expired": lambda: make_token(EC, iss=ISS, aud=good_aud, iat=time.time() - 1000),
        "wrong-audience": lambda: make_token(EC, iss=ISS, aud=aud(secure, "/cds-services/sir-order-sign")),
        "discovery-audience": lambda: make_token(EC, iss=ISS, aud=aud(secure, "/cds-services")),
        "alg-none": lambda: unsigned_token(iss=ISS, aud=good_aud, kid=EC.kid),
        "hmac-with-public-key": lambda: hmac_token(
            EC.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo),
            iss=ISS, aud=good_aud, kid=EC.kid),
        "unknown-issuer": lambda: make_token(EC, iss="https://evil.example.org", aud=good_aud),
        "unknown-kid": lambda: make_token(EC, iss=ISS, aud=good_aud, kid="nope"),
        "kid-of-other-issuer": lambda: make_token(RSA, iss=ISS, aud=good_aud),
        "jku-not-allowed": lambda: make_token(EC, iss=ISS, aud=good_aud, jku="https://evil.example.org/jwks"),
        "future-iat": lambda: make_token(EC, iss=ISS, aud=good_aud, iat=time.time() + 600),
        "too-long-lived": lambda: make_token(EC, iss=ISS, aud=good_aud, lifetime=86400),
        "no-jti": lambda: make_token(EC, iss=ISS, aud=good_aud, jti=""),
        "garbage": lambda: "not.a.jwt",
    }[case]()
    assert_refused(call(secure, token))


def test_clock_skew_is_tolerated(secure):
    # expired 30 s ago, issued 330 s ago: inside the 60 s skew
    token = make_token(EC, iss=ISS, aud=aud(secure), iat=time.time() - 330)
    assert call(secure, token).status_code == 200


def test_a_replayed_token_is_refused(secure):
    token = make_token(EC, iss=ISS, aud=aud(secure))
    assert call(secure, token).status_code == 200
    assert_refused(call(secure, token))


def test_keys_from_an_allowed_jku_are_fetched_cached_and_refreshed(secure):
    store = secure.store
    token = make_token(EC_AT_JKU, iss=ISS, aud=aud(secure), jku=secure.jku)
    assert call(secure, token).status_code == 200
    assert store.jwks_fetches == 1
    assert call(secure, make_token(EC_AT_JKU, iss=ISS, aud=aud(secure), jku=secure.jku)).status_code == 200
    assert store.jwks_fetches == 1  # cached
    rotated = ec_key("ec-rotated")
    assert_refused(call(secure, make_token(rotated, iss=ISS, aud=aud(secure), jku=secure.jku)))
    assert store.jwks_fetches == 2  # unknown kid: refetched once, still unknown
    store.jwks = {"keys": [EC_AT_JKU.jwk, rotated.jwk]}  # the issuer rotates its key
    assert call(secure, make_token(rotated, iss=ISS, aud=aud(secure), jku=secure.jku)).status_code == 200
    assert store.jwks_fetches == 3


def test_a_key_for_another_curve_or_alg_is_refused(secure):
    store = secure.store
    wrong = ec_key("ec-wrong-alg")
    wrong.jwk["alg"] = "ES256"  # the JWKS says this key is for ES256; the token says ES384
    store.jwks = {"keys": [wrong.jwk]}
    assert_refused(call(secure, make_token(wrong, iss=ISS, aud=aud(secure), jku=secure.jku)))


def test_refused_calls_are_audited_without_their_body(start_service):
    secure = start_service(trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]})})
    assert_refused(call(secure, make_token(EC, iss=ISS, aud="https://elsewhere.example.org")))
    with secure.state.sessions() as session:
        rows = session.execute(select(CallRecord)).scalars().all()
    assert [(r.outcome, r.http_status, r.request, r.service_id) for r in rows] == [
        ("unauthorized", 401, None, "sir-patient-view")]


def test_audience_uses_the_public_base_url_behind_a_proxy(start_service):
    service = start_service(trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]})},
                            public_base_url="https://cds.example.org/sir/")
    public = "https://cds.example.org/sir/cds-services"
    assert service.client.get("/cds-services", headers={
        "Authorization": f"Bearer {make_token(EC, iss=ISS, aud=public)}"}).status_code == 200
    assert service.client.get("/cds-services", headers={
        "Authorization": f"Bearer {make_token(EC, iss=ISS, aud=service.url + '/cds-services')}"}).status_code == 401


def test_settings_refuse_symmetric_algorithms():
    from pydantic import ValidationError

    from cds.service.config import Settings

    for algs in (["HS256"], ["none"], []):
        with pytest.raises(ValidationError):
            Settings(jwt_algorithms=algs)
    with pytest.raises(ValidationError):
        IssuerConfig()  # an issuer without any key source


def test_cors_preflight_and_headers_for_the_sandbox(start_service):
    service = start_service(cors_origins=[SANDBOX], trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]})})
    for path, method, headers in [("/cds-services", "GET", "authorization"),
                                  ("/cds-services/sir-patient-view", "POST", "authorization, content-type")]:
        response = service.client.options(path, headers={
            "Origin": SANDBOX, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers})
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == SANDBOX
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
    token = make_token(EC, iss=ISS, aud=service.url + "/cds-services")
    response = service.client.get("/cds-services", headers={"Origin": SANDBOX, "Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SANDBOX
    refused = service.client.get("/cds-services", headers={"Origin": SANDBOX})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == SANDBOX  # the browser can read the 401
    other = service.client.options("/cds-services", headers={
        "Origin": "https://evil.example.org", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers


def test_a_locally_configured_jwks_is_used_without_fetching_the_tokens_jku(secure):
    """The CDS Hooks sandbox case: its jku may be unreachable, so its keys are configured locally."""
    fetches = secure.state.verifier.jwks.fetches
    token = make_token(RSA, iss=RSA_ISS, aud=aud(secure), jku="https://unreachable.example.org/jwks.json")
    assert call(secure, token).status_code == 200
    assert secure.state.verifier.jwks.fetches == fetches
