"""Audit first, then answer (issue 10, item 1): no 200 with cards unless its audit row is committed.

* Bodies with NUL, lone surrogates and ``1e400`` are audited on SQLite *and* PostgreSQL, the raw bytes
  kept exactly (gzip), the JSON copy sanitised; a body over the audit limit is truncated, and says so.
* PostgreSQL made unreachable mid-load (through a TCP proxy this test starts, stops and restarts):
  every acknowledged (200) call has its row; the others got 503 + Retry-After.
* The SQLite data folder on a tiny full filesystem (tmpfs of 4 MiB): the same guarantee.

Real uvicorn, real engine worker processes, real databases; nothing is mocked.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cds.service import crud
from cds.service.db import make_engine, make_sessionmaker
from cds.service.models import CallRecord

from svc_support import full_prefetch, hook_request, patient_resources

SERVICE = "/cds-services/sir-patient-view"
JSON = {"content-type": "application/json"}


def _templates(service) -> dict[str, str]:
    return service.state.holder.current().catalog["sir-patient-view"].prefetch


def _body(service, pid: str, *, blob_bytes: int = 0) -> dict[str, Any]:
    body = hook_request("patient-view", pid, prefetch=full_prefetch(_templates(service), patient_resources(pid)))
    if blob_bytes:  # incompressible padding, so the audit row really needs new pages on disk
        body["extension"] = {"padding": base64.b64encode(os.urandom(blob_bytes)).decode()}
    return body


def _rows(sessions, instances: list[str]) -> dict[str, CallRecord]:
    found: dict[str, CallRecord] = {}
    with sessions() as session:
        for start in range(0, len(instances), 500):
            chunk = instances[start:start + 500]
            for row in session.execute(select(CallRecord).where(CallRecord.hook_instance.in_(chunk))).scalars():
                found[row.hook_instance] = row
    return found


def _row(service, hook_instance: str) -> CallRecord:
    rows = _rows(service.state.sessions, [hook_instance])
    assert hook_instance in rows, f"no audit row for {hook_instance}"
    return rows[hook_instance]


# -- bodies any JSON text can be ---------------------------------------------------------------------

@pytest.fixture()
def db_service(start_service, db_url):
    return start_service(database_url=db_url)


def test_nul_and_lone_surrogates_are_audited_exactly_on_both_databases(db_service):
    body = _body(db_service, "nul-1")
    raw = json.dumps(body)
    # NUL and a lone surrogate in strings and in a key the rules never read; the call still gets its card
    raw = raw[:-1] + ', "extension": {"note\\u0000key": "a\\u0000b", "who": "x\\ud800y", "pair": "\\ud83d\\ude00"}}'
    response = db_service.client.post(SERVICE, content=raw.encode(), headers=JSON)
    assert response.status_code == 200, response.text
    assert [c["source"]["topic"]["code"] for c in response.json()["cards"]] == ["sir-suspected"]
    row = _row(db_service, body["hookInstance"])
    assert row.outcome == "ok" and row.card_uuids == [response.json()["cards"][0]["uuid"]]
    assert gzip.decompress(row.request_gz) == raw.encode()  # exactly what was sent
    assert row.request_bytes == len(raw.encode()) and row.request_truncated is False
    assert row.request["extension"] == {"note\ufffdkey": "a\ufffdb", "who": "x\ufffdy", "pair": "\U0001f600"}
    assert row.request["context"] == body["context"]


def test_nul_in_the_patient_id_and_an_error_message_is_audited_on_both_databases(db_service):
    body = hook_request("patient-view", "p\x00q")  # no prefetch, no FHIR server: 412
    response = db_service.client.post(SERVICE, json=body)
    assert response.status_code == 412, response.text
    row = _row(db_service, body["hookInstance"])
    assert row.patient_id == "p\ufffdq" and row.outcome == "precondition-failed"
    assert json.loads(gzip.decompress(row.request_gz))["context"]["patientId"] == "p\x00q"


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1e308"])
def test_non_finite_and_huge_numbers_are_refused_and_audited_on_both_databases(db_service, number):
    body = _body(db_service, "inf-1")
    raw = json.dumps(body)[:-1] + f', "extension": {{"x": {number}}}}}'
    response = db_service.client.post(SERVICE, content=raw.encode(), headers=JSON)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["extension.x"]
    row = _row(db_service, body["hookInstance"])
    assert row.outcome == "bad-request" and row.patient_id == "inf-1"
    assert gzip.decompress(row.request_gz) == raw.encode()
    stored = row.request["extension"]["x"]  # PostgreSQL's JSONB gives 1e308 back as an exact integer
    assert stored is None if "400" in number else float(stored) == float(number)


def test_a_body_over_the_audit_limit_is_truncated_and_says_so(start_service):
    service = start_service(audit_max_body_bytes=4096)
    body = _body(service, "big-1", blob_bytes=6000)
    raw = json.dumps(body).encode()
    response = service.client.post(SERVICE, content=raw, headers=JSON)
    assert response.status_code == 200, response.text  # the body limit for calls is much higher
    row = _row(service, body["hookInstance"])
    assert row.request_truncated is True and row.request is None and row.request_bytes == len(raw)
    assert gzip.decompress(row.request_gz) == raw[:4096]
    assert any("over 4096 bytes" in note for note in row.notes)
    assert row.card_uuids == [response.json()["cards"][0]["uuid"]]


def test_the_access_token_is_not_in_either_copy_of_the_body(start_service, fhir):
    service = start_service()
    fhir_url, _store = fhir
    body = hook_request("patient-view", "tok-1", prefetch=full_prefetch(_templates(service), patient_resources("tok-1")),
                        fhir_server=fhir_url, token="s3cret-access-token-value")
    response = service.client.post(SERVICE, json=body)
    row = _row(service, body["hookInstance"])
    assert row.http_status == response.status_code
    assert b"s3cret-access-token-value" not in gzip.decompress(row.request_gz)
    assert "s3cret-access-token-value" not in json.dumps(row.request)
    assert row.request["fhirAuthorization"]["access_token"] == "[redacted]"


def test_a_token_written_with_escapes_is_not_kept_in_the_raw_copy(start_service, fhir):
    service = start_service()
    fhir_url, _store = fhir
    body = hook_request("patient-view", "tok-2", prefetch=full_prefetch(_templates(service), patient_resources("tok-2")),
                        fhir_server=fhir_url, token="PLACEHOLDER")
    raw = json.dumps(body).replace('"access_token": "PLACEHOLDER"', '"access\\u005ftoken": "\\u0053ecretTok"')
    assert "access\\u005ftoken" in raw
    response = service.client.post(SERVICE, content=raw.encode(), headers=JSON)
    row = _row(service, body["hookInstance"])
    assert row.http_status == response.status_code
    assert row.request_gz is None and any("raw body not kept" in note for note in row.notes)
    assert "Secret" not in json.dumps(row.request) and row.request["fhirAuthorization"]["access_token"] == "[redacted]"


# -- the database goes away under load ------------------------------------------------------------

class TcpProxy:
    """A TCP relay on 127.0.0.1 to ``upstream``; :meth:`stop` drops every connection and refuses new ones
    (as a database host that went away), :meth:`start` listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _run_load(url: str, make_body, *, clients: int, phases: list[tuple[float, Any]]) -> list[tuple[str, int, dict]]:
    """Run ``clients`` looping clients while ``phases`` (seconds, action-or-None) play out; all results."""
    stop = threading.Event()
    results: list[tuple[str, int, dict]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=90) as http:
            i = 0
            while not stop.is_set():
                body = make_body(f"load-{n}-{i}")
                try:
                    response = http.post(SERVICE, json=body)
                except httpx.HTTPError as exc:  # a transport error is not an acknowledgement
                    with lock:
                        results.append((body["hookInstance"], -1, {"error": repr(exc)}))
                    continue
                with lock:
                    results.append((body["hookInstance"], response.status_code,
                                    {"retry-after": response.headers.get("retry-after"), "json": response.json()}))
                i += 1

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, n) for n in range(clients)]
        for seconds, action in phases:
            if action is not None:
                action()
            time.sleep(seconds)
        stop.set()
        for future in futures:
            future.result(timeout=180)
    return results


def _check_acknowledged_are_audited(results, sessions) -> tuple[int, int]:
    """(acknowledged, refused for the audit); fails if any 200 lacks its row."""
    rows = _rows(sessions, [hi for hi, status, _ in results if status == 200])
    ok = [hi for hi, status, _ in results if status == 200]
    missing = [hi for hi in ok if hi not in rows]
    assert missing == [], f"{len(missing)} of {len(ok)} acknowledged calls have no audit row"
    assert all(rows[hi].outcome == "ok" and rows[hi].http_status == 200 for hi in ok)
    refused = [(status, extra) for _, status, extra in results if status == 503]
    for _status, extra in refused:
        assert extra["retry-after"], "a 503 without Retry-After"
        assert extra["json"]["resourceType"] == "OperationOutcome"
    audit_refused = sum(1 for _, extra in refused if "audit trail" in extra["json"]["issue"][0]["diagnostics"])
    return len(ok), audit_refused


@pytest.mark.postgres
def test_postgresql_unreachable_mid_load_no_acknowledged_call_lacks_its_row(start_service, pg_url):
    from sqlalchemy.engine import make_url

    direct = make_url(pg_url)
    proxy = TcpProxy((direct.host or "127.0.0.1", direct.port or 5432)).start()
    proxied = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        service = start_service(database_url=proxied, audit_timeout_s=3.0, engine_workers=1)
        assert service.state.holder.current().evaluator.wait_ready(timeout=120)
        failures_before = crud.audit_failures()
        make_body = lambda pid: _body(service, pid)  # noqa: E731
        results = _run_load(service.url, make_body, clients=6, phases=[
            (3.0, None),           # the database is there
            (5.0, proxy.stop),     # gone: connections dropped, new ones refused
            (6.0, proxy.start),    # back
        ])
    finally:
        proxy.stop()
    db = make_engine(pg_url)
    try:
        acknowledged, audit_refused = _check_acknowledged_are_audited(results, make_sessionmaker(db))
    finally:
        db.dispose()
    statuses = sorted({status for _, status, _ in results})
    assert acknowledged > 10, statuses
    assert audit_refused > 0, f"the outage was not felt: {statuses}"
    assert crud.audit_failures() - failures_before >= audit_refused
    # served again after the outage: the last call of the run was acknowledged and audited
    assert any(status == 200 for _, status, _ in results[-6:]), results[-6:]


# -- the disk is full ------------------------------------------------------------------------------

@pytest.fixture()
def tiny_filesystem(tmp_path: Path):
    """A 4 MiB tmpfs (we are root in CI and here); skipped, with the reason, where mounting is not allowed."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"mount of a tmpfs failed in CI: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def _fill(directory: Path) -> Path:
    """Fill the filesystem to the last byte (unbuffered writes of 4 KiB, then of 1 byte)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def test_full_disk_no_acknowledged_call_lacks_its_row(start_service, tiny_filesystem):
    service = start_service(data_dir=tiny_filesystem, audit_timeout_s=5.0, engine_workers=1)
    assert service.state.holder.current().evaluator.wait_ready(timeout=120)
    warm = service.client.post(SERVICE, json=_body(service, "disk-warm"))
    assert warm.status_code == 200, warm.text
    filler = _fill(tiny_filesystem)
    make_body = lambda pid: _body(service, pid, blob_bytes=30_000)  # noqa: E731
    results = _run_load(service.url, make_body, clients=4, phases=[(6.0, None)])
    acknowledged, audit_refused = _check_acknowledged_are_audited(results, service.state.sessions)
    assert audit_refused > 0, sorted({status for _, status, _ in results})
    # space again: the service answers and audits again, no restart needed
    filler.unlink()
    after = _body(service, "disk-after")
    response = service.client.post(SERVICE, json=after)
    assert response.status_code == 200, response.text
    assert _row(service, after["hookInstance"]).outcome == "ok"
    assert acknowledged + audit_refused <= len(results)


def _limit_file_size(limit: int) -> None:  # runs in the server child before exec
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_file_size_limit_no_acknowledged_call_lacks_its_row(tmp_path):
    """The full disk again, without mount (works in any container): the real ``cds serve`` in a child
    process whose files may not grow past 600 KB (RLIMIT_FSIZE), so the SQLite audit fills up."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | {
        "CDS_RULE_TESTS_ON_START": "false", "CDS_AUDIT_TIMEOUT_S": "5", "CDS_ENGINE_WORKERS": "1"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below; a file, never a pipe
    server = subprocess.Popen([sys.executable, "-m", "cds.service", "--port", str(port), "--data-dir", str(data_dir),
                               "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              preexec_fn=lambda: _limit_file_size(600_000))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/cds-services", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=60) as http:
            templates = {s["id"]: s for s in http.get("/cds-services").json()["services"]}["sir-patient-view"]["prefetch"]

            def make_body(pid: str) -> dict[str, Any]:
                body = hook_request("patient-view", pid, prefetch=full_prefetch(templates, patient_resources(pid)))
                body["extension"] = {"padding": base64.b64encode(os.urandom(30_000)).decode()}
                return body

            results = _run_load(url, make_body, clients=3, phases=[(12.0, None)])
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    db = make_engine(f"sqlite:///{data_dir / 'cds.sqlite3'}")
    try:
        acknowledged, audit_refused = _check_acknowledged_are_audited(results, make_sessionmaker(db))
    finally:
        db.dispose()
    statuses = sorted({status for _, status, _ in results})
    assert acknowledged > 0 and audit_refused > 0, (statuses, acknowledged, audit_refused)
