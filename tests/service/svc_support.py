"""Test support for the HTTP service: real uvicorn servers in threads, a tiny FHIR server, JWTs, data.

Servers bind pre-opened sockets on 127.0.0.1 port 0, so parallel runs never race for a port.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


# -- servers ---------------------------------------------------------------------------------------

def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGINT (a clean uvicorn shutdown), then SIGKILL if it has not ended within 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def bound_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a free port (so a URL is known before the server runs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread."""

    def __init__(self, app: Any, sock: socket.socket | None = None) -> None:
        self.sock = sock or bound_socket()
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@dataclass
class FhirStore:
    """What the test FHIR server holds and what it saw."""

    resources: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # pid -> type -> list
    requests: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 2
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    jwks_fetches: int = 0
    fail_types: set[str] = field(default_factory=set)

    def add_patient(self, pid: str, resources: dict[str, list[dict[str, Any]]]) -> None:
        self.resources[pid] = resources


def fhir_app(store: FhirStore) -> FastAPI:
    """A minimal FHIR R4 server: read Patient, search by patient with next-link paging, a JWKS."""
    app = FastAPI()

    @app.get("/jwks.json")
    async def jwks() -> JSONResponse:
        store.jwks_fetches += 1
        return JSONResponse(store.jwks)

    @app.get("/fhir/Patient/{pid}")
    async def read_patient(pid: str, request: Request) -> JSONResponse:
        store.requests.append({"path": request.url.path, "query": str(request.url.query),
                               "authorization": request.headers.get("authorization")})
        patients = store.resources.get(pid, {}).get("Patient", [])
        if not patients:
            return JSONResponse({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-found"}]}, status_code=404)
        return JSONResponse(patients[0], media_type="application/fhir+json")

    @app.get("/fhir/{rtype}")
    async def search(rtype: str, request: Request) -> JSONResponse:
        store.requests.append({"path": request.url.path, "query": str(request.url.query),
                               "authorization": request.headers.get("authorization")})
        if rtype in store.fail_types:
            return JSONResponse({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "exception"}]}, status_code=500)
        params = request.query_params
        pid = params.get("patient", "")
        found = list(store.resources.get(pid, {}).get(rtype, []))
        codes = params.get("code")
        if codes:
            wanted = {tuple(c.split("|", 1)) for c in codes.split(",")}
            found = [r for r in found if any((c.get("system"), c.get("code")) in wanted
                                             for c in r.get("code", {}).get("coding", []))]
        page = int(params.get("_page", "1"))
        start = (page - 1) * store.page_size
        chunk = found[start:start + store.page_size]
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                                  "entry": [{"fullUrl": f"{request.base_url}fhir/{rtype}/{r['id']}",
                                             "resource": r, "search": {"mode": "match"}} for r in chunk]}
        if start + store.page_size < len(found):
            query = dict(params)
            query["_page"] = str(page + 1)
            next_url = str(request.url.replace(query="&".join(f"{k}={v}" for k, v in query.items())))
            bundle["link"] = [{"relation": "next", "url": next_url}]
        return JSONResponse(bundle, media_type="application/fhir+json")

    return app


# -- keys and tokens -------------------------------------------------------------------------------

@dataclass
class KeyPair:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]


def ec_key(kid: str = "test-es384") -> KeyPair:
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "ES384"})
    return KeyPair(kid, "ES384", private, jwk)


def rsa_key(kid: str = "test-rs384") -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS384"})
    return KeyPair(kid, "RS384", private, jwk)


def make_token(key: KeyPair, *, iss: str, aud: str, jku: str | None = None, lifetime: int = 300,
               iat: float | None = None, jti: str | None = None, kid: str | None = None,
               **claims: Any) -> str:
    now = int(time.time() if iat is None else iat)
    payload = {"iss": iss, "aud": aud, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4()) if jti is None else jti,
               **claims}
    headers = {"kid": kid or key.kid, "typ": "JWT"}
    if jku:
        headers["jku"] = jku
    return jwt.encode(payload, key.private, algorithm=key.alg, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(*, iss: str, aud: str, kid: str) -> str:
    """alg "none": header.payload. with an empty signature."""
    now = int(time.time())
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    payload = {"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}."


def hmac_token(secret: bytes, *, iss: str, aud: str, kid: str) -> str:
    """HS384 signed with ``secret`` (e.g. the issuer's public key text: the classic confusion attack)."""
    now = int(time.time())
    header = {"alg": "HS384", "typ": "JWT", "kid": kid}
    payload = {"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha384).digest()
    return f"{signing_input}.{_b64(signature)}"


def tamper(token: str) -> str:
    """Change one claim of the payload, keep the signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "Practitioner/evil"
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


# -- clinical data ---------------------------------------------------------------------------------

def observation(pid: str, oid: str, code: str, value: float, unit: str, ucum: str,
                date: str = "2026-01-05T09:00:00Z") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum}}


def patient_resources(pid: str, *, insulin: float = 40.0, bmi: float = 22.0, birth: str = "1995-03-01",
                      extra_observations: int = 0) -> dict[str, list[dict[str, Any]]]:
    """A 30-year-old without diabetes: fasting insulin (LOINC 27873-9, uIU/mL) and BMI (39156-5).

    With the defaults the built-in rules give a ``sir-suspected`` card (insulin 40 uIU/mL = 240 pmol/L
    > 150, BMI 22 < 30). ``extra_observations`` adds older weights to exercise search paging.
    """
    observations = [
        observation(pid, f"{pid}-ins", "27873-9", insulin, "uIU/mL", "u[IU]/mL"),
        observation(pid, f"{pid}-bmi", "39156-5", bmi, "kg/m2", "kg/m2"),
    ]
    for i in range(extra_observations):
        observations.append(observation(pid, f"{pid}-wt{i}", "29463-7", 60 + i, "kg", "kg",
                                        date=f"2025-{(i % 12) + 1:02d}-01T09:00:00Z"))
    return {"Patient": [{"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": birth}],
            "Observation": observations}


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": r} for r in resources]}


def full_prefetch(templates: dict[str, str], resources: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Every template key satisfied, the way an EHR would: Patient read, searchsets for the rest."""
    by_key = {"patient": "Patient", "observations": "Observation", "conditions": "Condition",
              "medicationRequests": "MedicationRequest", "medicationStatements": "MedicationStatement",
              "allergies": "AllergyIntolerance", "serviceRequests": "ServiceRequest",
              "deviceRequests": "DeviceRequest"}
    prefetch: dict[str, Any] = {}
    for key in templates:
        rtype = by_key[key]
        if rtype == "Patient":
            prefetch[key] = resources["Patient"][0]
        else:
            prefetch[key] = searchset(resources.get(rtype, []))
    return prefetch


def draft_medication_request(pid: str, rxnorm: str, rid: str = "draft-1") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm}]},
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2026-01-06"}


def hook_request(hook: str, pid: str, *, prefetch: dict[str, Any] | None = None,
                 fhir_server: str | None = None, token: str | None = None,
                 drafts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/example", "patientId": pid}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": d} for d in drafts or []]}
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{d['id']}" for d in drafts or []][:1]
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "cds-service"}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def comparable(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cards without what differs per call: uuids, the why-page link and the ``authoredOn`` (now) of suggested resources."""
    clean = json.loads(json.dumps(cards))
    for card in clean:
        card.pop("uuid", None)
        # issue 12: the service adds a signed "Why this card" link (a new token per call)
        links = [link for link in card.pop("links", None) or [] if link.get("label") != "Why this card"]
        if links:
            card["links"] = links
        for suggestion in card.get("suggestions", []):
            suggestion.pop("uuid", None)
            for action in suggestion.get("actions", []):
                (action.get("resource") or {}).pop("authoredOn", None)
    return clean
