"""FHIR fetches: SSRF (only listed servers, checked addresses, one 412 text) and hung servers.

Real listeners on 127.0.0.1 count the connections they accept, so "no connection was made" is
observed, not assumed; the service runs in real uvicorn.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cds.service.config import IssuerConfig
from cds.service.prefetch import FETCH_FAILED
from cds.service.ssrf import FhirServerPolicy, FhirServerRefused

from svc_support import ec_key, full_prefetch, hook_request, make_token, patient_resources

ISS = "https://ehr.example.org"
LISTED = "https://ehr.example.org/fhir"
EC = ec_key("ec-ssrf")


class Listener:
    """A TCP listener that accepts and counts connections; ``hang``: never answers, else 200 Patient."""

    def __init__(self, *, hang: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.accepts = 0
        self.hang = hang
        self._open: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepts += 1
            self._open.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._open:
            conn.close()


@pytest.fixture()
def listener():
    listening = Listener()
    yield listening
    listening.close()


def outcome(response: httpx.Response) -> dict:
    return response.json()["issue"][0]


def secure_call(service, body: dict) -> httpx.Response:
    token = make_token(EC, iss=ISS, aud=service.url + "/cds-services/sir-patient-view")
    return service.client.post("/cds-services/sir-patient-view", json=body,
                               headers={"Authorization": f"Bearer {token}"})


# -- SSRF: the URL ---------------------------------------------------------------------------------

def test_a_fhir_server_outside_the_issuers_list_is_refused_before_any_connection(start_service, listener, caplog):
    service = start_service(trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]}, fhir_servers=[LISTED])})
    for server in (f"http://127.0.0.1:{listener.port}/fhir", f"https://127.0.0.1:{listener.port}/fhir",
                   f"http://localhost:{listener.port}/admin/rulesets"):
        response = secure_call(service, hook_request("patient-view", "x1", fhir_server=server, token="secret-tok"))
        assert response.status_code == 412, response.text
        assert outcome(response)["diagnostics"] == FETCH_FAILED
    assert listener.accepts == 0
    assert "not among the issuer's fhir_servers" in caplog.text
    assert "secret-tok" not in caplog.text


def test_metadata_address_is_refused_even_when_listed(start_service, caplog):
    metadata = "http://169.254.169.254/latest"
    service = start_service(trusted_issuers={ISS: IssuerConfig(jwks={"keys": [EC.jwk]}, fhir_servers=[metadata])},
                            fhir_allow_http=True, fhir_allowed_networks=["169.254.0.0/16"])
    started = time.perf_counter()
    response = secure_call(service, hook_request("patient-view", "x2", fhir_server=metadata, token="t"))
    assert response.status_code == 412 and outcome(response)["diagnostics"] == FETCH_FAILED
    assert "link-local or cloud-metadata" in caplog.text  # refused by the address check, not a timeout
    assert time.perf_counter() - started < 5


def test_listed_loopback_server_is_refused_unless_its_network_is_allowed(start_service, listener, fhir, caplog):
    base, store = fhir
    by_name = f"http://localhost:{listener.port}/fhir"
    by_ip = f"http://127.0.0.1:{listener.port}/fhir"
    issuers = {ISS: IssuerConfig(jwks={"keys": [EC.jwk]}, fhir_servers=[by_name, by_ip, base])}
    service = start_service(trusted_issuers=issuers)
    for server in (by_name, by_ip):
        response = secure_call(service, hook_request("patient-view", "x3", fhir_server=server, token="t"))
        assert response.status_code == 412 and outcome(response)["diagnostics"] == FETCH_FAILED
    assert listener.accepts == 0  # the name was resolved and its loopback address refused
    assert "not in CDS_FHIR_ALLOWED_NETWORKS" in caplog.text
    # explicitly allowed: the listed server is used, with the token
    allowed = start_service(trusted_issuers=issuers, fhir_allowed_networks=["127.0.0.0/8"])
    store.add_patient("x4", patient_resources("x4"))
    response = secure_call(allowed, hook_request("patient-view", "x4", fhir_server=base, token="tok-x4"))
    assert response.status_code == 200, response.text
    assert store.requests and all(r["authorization"] == "Bearer tok-x4" for r in store.requests)


def test_open_mode_fetches_only_from_loopback(start_service, caplog):
    service = start_service()
    own_admin = f"{service.url}/admin/rulesets?x="  # the service's own loopback-only route
    for server in ("http://169.254.169.254/latest", "https://ehr.example.org/fhir", "http://10.0.0.1/fhir"):
        response = service.client.post("/cds-services/sir-patient-view",
                                       json=hook_request("patient-view", "x5", fhir_server=server, token="t"))
        assert response.status_code == 412, server
        assert outcome(response)["diagnostics"] == FETCH_FAILED
    assert "open mode: only loopback" in caplog.text
    # a base URL with a query (which could address another route) is refused as invalid input, before the
    # allow-list is even consulted: 400 naming fhirServer (the URL check in ssrf.py refuses it too, for
    # callers that bypass the request schema)
    response = service.client.post("/cds-services/sir-patient-view",
                                   json=hook_request("patient-view", "x5", fhir_server=own_admin, token="t"))
    assert response.status_code == 400
    assert outcome(response)["expression"] == ["fhirServer"]


def test_redirects_are_not_followed(start_service, listener, caplog):
    """A FHIR server answering 302 towards another host: 412, and that host never sees a connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    location = f"http://127.0.0.1:{listener.port}/steal"

    def run() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n".encode())

    threading.Thread(target=run, daemon=True).start()
    try:
        service = start_service()
        response = service.client.post("/cds-services/sir-patient-view", json=hook_request(
            "patient-view", "x6", fhir_server=f"http://127.0.0.1:{sock.getsockname()[1]}/fhir", token="t"))
        assert response.status_code == 412 and outcome(response)["diagnostics"] == FETCH_FAILED
        assert listener.accepts == 0
        assert "answered 302" in caplog.text
    finally:
        sock.close()


@pytest.mark.parametrize("url", [
    "https://ehr.example.org/fhir-evil/Patient/1",
    "https://ehr.example.org.evil.com/fhir",
    "https://ehr.example.org@127.0.0.1/fhir",
    "https://ehr.example.org:8443/fhir",
    "http://ehr.example.org/fhir",
    "https://ehr.example.org/fhir/../admin",
    "https://ehr.example.org/fhir/%2e%2e/admin",
    "https://ehr.example.org/fhir\r\nX-Evil: 1",
    "https://ehr.example.org/",
])
def test_only_urls_under_a_listed_base_pass(url):
    policy = FhirServerPolicy.build(open_mode=False)
    with pytest.raises(FhirServerRefused):
        policy.check_url(url, [LISTED])


def test_urls_under_a_listed_base_pass():
    policy = FhirServerPolicy.build(open_mode=False)
    for url in (LISTED, LISTED + "/", LISTED + "/Patient/1", "HTTPS://EHR.example.org:443/fhir/Observation?x=1"):
        policy.check_url(url, [LISTED])


@pytest.mark.parametrize("address,open_mode,networks,ok", [
    ("169.254.169.254", False, ["169.254.0.0/16"], False),
    ("::ffff:169.254.169.254", True, [], False),
    ("fd00:ec2::254", False, ["fd00::/8"], False),
    ("100.100.100.200", False, [], False),
    ("127.0.0.1", False, [], False),
    ("127.0.0.1", True, [], True),
    ("10.1.2.3", False, [], False),
    ("10.1.2.3", False, ["10.0.0.0/8"], True),
    ("10.1.2.3", True, ["10.0.0.0/8"], False),
    ("0.0.0.0", True, [], False),
    ("93.184.215.14", False, [], True),
])
def test_address_policy(address, open_mode, networks, ok):
    policy = FhirServerPolicy.build(open_mode=open_mode, allowed_networks=networks)
    if ok:
        policy.check_address(ipaddress.ip_address(address))
    else:
        with pytest.raises(FhirServerRefused):
            policy.check_address(ipaddress.ip_address(address))


# -- hung FHIR servers --------------------------------------------------------------------------------

def _slow_server() -> tuple[socket.socket, int]:
    """Answers headers at once, then one byte of body every 0.5 s: never finishes in time."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)

    def handle(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 100000\r\n\r\n")
            while True:
                conn.sendall(b" ")
                time.sleep(0.5)
        except OSError:
            pass

    def run() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    return sock, sock.getsockname()[1]


def test_rounds_of_hung_and_slow_fhir_servers_leave_later_fetches_working(start_service, listener, fhir):
    """The pool failure: cancelled fetches used to leave CONNECTING connections in a shared pool."""
    base, store = fhir
    service = start_service(fhir_total_timeout_s=1.0, fhir_connect_timeout_s=1.0, fhir_read_timeout_s=3.0)
    slow, slow_port = _slow_server()
    try:
        targets = [f"http://127.0.0.1:{listener.port}/fhir", f"http://127.0.0.1:{slow_port}/fhir"]

        def hung_call(i: int) -> int:
            body = hook_request("patient-view", f"h{i}", fhir_server=targets[i % 2], token="t")
            return httpx.post(service.url + "/cds-services/sir-patient-view", json=body, timeout=60).status_code

        for round_ in range(4):  # 40 calls x 8 prefetch keys: more requests than httpx's 100 connections
            with ThreadPoolExecutor(40) as pool:
                assert set(pool.map(hung_call, range(40))) == {412}
            pid = f"healthy{round_}"
            store.add_patient(pid, patient_resources(pid))
            response = service.client.post("/cds-services/sir-patient-view",
                                           json=hook_request("patient-view", pid, fhir_server=base, token="t"))
            assert response.status_code == 200, (round_, response.text)
        assert service.state.fhir.open_sessions == 0
    finally:
        slow.close()


def test_an_unrelated_call_stays_fast_while_calls_wait_on_a_hung_server(start_service, listener, fhir):
    base, store = fhir
    service = start_service(fhir_total_timeout_s=12.0, fhir_connect_timeout_s=5.0, fhir_read_timeout_s=12.0)
    store.add_patient("u1", patient_resources("u1"))
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    full = hook_request("patient-view", "u2", prefetch=full_prefetch(templates, patient_resources("u2")))
    service.client.post("/cds-services/sir-patient-view", json=full)  # warm the engine worker

    def hung_call(i: int) -> int:
        body = hook_request("patient-view", f"w{i}", fhir_server=f"http://127.0.0.1:{listener.port}/fhir")
        return httpx.post(service.url + "/cds-services/sir-patient-view", json=body, timeout=60).status_code

    with ThreadPoolExecutor(36) as pool:
        waiting = [pool.submit(hung_call, i) for i in range(36)]
        deadline = time.monotonic() + 30
        while service.state.fhir.open_sessions < 36 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.state.fhir.open_sessions >= 30  # 30+ calls are waiting on the hung server
        started = time.perf_counter()
        response = service.client.post("/cds-services/sir-patient-view",
                                       json=hook_request("patient-view", "u1", fhir_server=base))
        fetched_in = time.perf_counter() - started
        assert response.status_code == 200, response.text
        started = time.perf_counter()
        assert service.client.post("/cds-services/sir-patient-view", json=full).status_code == 200
        evaluated_in = time.perf_counter() - started
        assert all(not f.done() for f in waiting)  # they were still waiting while the others ran
        assert {f.result() for f in waiting} == {412}
    # well inside the hung calls' 12 s wait (they were all still waiting: asserted above); not a speed test
    assert fetched_in < 8.0 and evaluated_in < 8.0, (fetched_in, evaluated_in)
