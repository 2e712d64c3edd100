"""Engine workers under fire (issue 9): real uvicorn, real worker processes, real signals, real database.

* A worker killed with SIGKILL or SIGSEGV *while it evaluates a call*, during a load run: the service
  keeps answering, that call gets a 5xx with an ``engine-crash`` audit row (read back from the
  database), every other call is answered 200, and the pool is back to N workers within 5 s.
* A payload that crashes workers (the TEST-ONLY fault hook ``CDS_FAULT_INJECT_CRASH_PATIENT``) is
  quarantined after two crashes and then answered at once without touching a worker.
* A hang past ``CDS_ENGINE_TIMEOUT_S`` gives ``engine-timeout`` and a replaced worker.
* Through the pool, the 40 Synthea bundles give exactly the in-process cards.

The fault hooks are read by the workers from their environment, inherited when they are spawned, so
each test sets them (monkeypatch) before starting its service.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cds.service.models import CallRecord

from svc_support import comparable, full_prefetch, hook_request, patient_resources

SERVICE = "/cds-services/sir-patient-view"


def _templates(service: Any) -> dict[str, str]:
    return service.state.holder.current().catalog["sir-patient-view"].prefetch


def _body(service: Any, pid: str, **kw: Any) -> dict[str, Any]:
    return hook_request("patient-view", pid, prefetch=full_prefetch(_templates(service), patient_resources(pid, **kw)))


def _pool(service: Any) -> Any:
    return service.state.holder.current().evaluator


def _wait(predicate: Any, timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; the seconds it took (fails after ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def _audit(service: Any, hook_instance: str) -> CallRecord:
    with service.state.sessions() as session:
        rows = session.execute(select(CallRecord).where(CallRecord.hook_instance == hook_instance)).scalars().all()
    assert len(rows) == 1, f"expected one audit row for {hook_instance}, found {len(rows)}"
    return rows[0]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_a_worker_killed_mid_call_fails_only_that_call_and_is_replaced(start_service, monkeypatch, signum):
    # the victim's calls take 2 s in the worker, so the signal lands while it evaluates
    monkeypatch.setenv("CDS_FAULT_INJECT_SLOW_PATIENT", "victim")
    monkeypatch.setenv("CDS_FAULT_INJECT_SLOW_S", "2")
    service = start_service(engine_workers=2)
    pool = _pool(service)
    assert pool.wait_ready(timeout=120), pool.stats()
    before = set(pool.pids())
    insulin = {"w-high": 40, "w-low": 8}
    serial = {pid: comparable(service.client.post(SERVICE, json=_body(service, pid, insulin=value)).json()["cards"])
              for pid, value in insulin.items()}
    assert serial["w-high"] != serial["w-low"]  # so a mixed-up answer would show

    stop = threading.Event()
    load: list[tuple[str, int, Any]] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=service.url, timeout=60) as http:
            i = 0
            while not stop.is_set():
                pid = ("w-high", "w-low")[(n + i) % 2]
                response = http.post(SERVICE, json=_body(service, pid, insulin=insulin[pid]))
                load.append((pid, response.status_code,
                             comparable(response.json().get("cards", [])) if response.status_code == 200 else response.text))
                i += 1

    victim_body = _body(service, "victim")
    with ThreadPoolExecutor(4) as threads:
        clients = [threads.submit(client, n) for n in range(3)]
        time.sleep(0.5)  # load is running on both workers
        victim = threads.submit(lambda: httpx.post(f"{service.url}{SERVICE}", json=victim_body, timeout=60))
        _wait(lambda: pool.pid_serving(victim_body["hookInstance"]) is not None, 30, "the victim call on a worker")
        target = pool.pid_serving(victim_body["hookInstance"])
        os.kill(target, signum)
        killed_at = time.monotonic()
        response = victim.result(timeout=60)
        back_in = _wait(lambda: pool.ready_count() == 2 and target not in pool.pids(), 5.0,
                        "the pool back to 2 workers")
        time.sleep(0.5)  # more load on the replaced pool
        stop.set()
        for c in clients:
            c.result(timeout=60)

    assert response.status_code == 500, response.text
    assert response.json()["issue"][0]["diagnostics"] == "the rule engine failed on this request"
    row = _audit(service, victim_body["hookInstance"])
    assert (row.outcome, row.http_status) == ("engine-crash", 500)
    # every other call was answered, with exactly the serial cards
    assert len(load) > 10
    assert [r for r in load if r[1] != 200] == []
    for pid, _status, cards in load:
        assert cards == serial[pid]
    after = pool.stats()
    assert after["crashes"] >= 1 and after["restarts"] >= 1
    assert len(set(pool.pids()) - before) == 1  # exactly the killed worker was replaced
    assert time.monotonic() - killed_at < 60 and back_in <= 5.0


def test_an_idle_worker_killed_is_replaced_within_5_s(start_service):
    service = start_service(engine_workers=2)
    pool = _pool(service)
    assert pool.wait_ready(timeout=120), pool.stats()
    target = pool.pids()[0]
    os.kill(target, signal.SIGKILL)
    _wait(lambda: pool.ready_count() == 2 and target not in pool.pids(), 5.0, "the pool back to 2 workers")
    assert service.client.post(SERVICE, json=_body(service, "idle-1")).status_code == 200


def test_a_crash_looping_payload_is_quarantined(start_service, monkeypatch):
    monkeypatch.setenv("CDS_FAULT_INJECT_CRASH_PATIENT", "poison")
    service = start_service(engine_workers=2, quarantine_s=300)
    pool = _pool(service)
    assert pool.wait_ready(timeout=120), pool.stats()
    poison = _body(service, "poison")
    outcomes = []
    for attempt in range(3):  # an EHR retrying: a new hookInstance each time, the same data
        poison["hookInstance"] = f"00000000-0000-4000-8000-00000000000{attempt}"
        started = time.perf_counter()
        response = service.client.post(SERVICE, json=poison)
        outcomes.append((response.status_code, time.perf_counter() - started, pool.stats()["crashes"]))
        assert response.status_code == 500
        row = _audit(service, poison["hookInstance"])
        assert (row.outcome, row.http_status) == ("engine-crash", 500)
    assert [crashes for _s, _t, crashes in outcomes] == [1, 2, 2]  # the third touched no worker
    assert "quarantined" in (row.error or "")
    stats = pool.stats()
    assert stats["quarantined_calls"] == 1 and stats["quarantined_payloads"] == 1
    # the quarantine is per payload: other patients are served
    assert service.client.post(SERVICE, json=_body(service, "healthy")).status_code == 200
    _wait(lambda: pool.ready_count() == 2, 10, "the pool back to 2 workers")


def test_a_hang_past_the_deadline_is_an_engine_timeout(start_service, monkeypatch):
    monkeypatch.setenv("CDS_FAULT_INJECT_HANG_PATIENT", "stuck")
    service = start_service(engine_workers=1, engine_timeout_s=1.5)
    pool = _pool(service)
    assert pool.wait_ready(timeout=120), pool.stats()
    first = pool.pids()
    body = _body(service, "stuck")
    started = time.perf_counter()
    response = service.client.post(SERVICE, json=body)
    waited = time.perf_counter() - started
    assert response.status_code == 503, response.text
    assert response.json()["issue"][0]["code"] == "timeout"
    assert 1.4 < waited < 30
    row = _audit(service, body["hookInstance"])
    assert (row.outcome, row.http_status) == ("engine-timeout", 503)
    assert pool.stats()["timeouts"] == 1
    _wait(lambda: pool.ready_count() == 1 and pool.pids() != first, 10, "a replacement worker")
    assert service.client.post(SERVICE, json=_body(service, "after-hang")).status_code == 200


def test_admin_status_reports_the_workers(start_service):
    service = start_service(engine_workers=2)
    assert _pool(service).wait_ready(timeout=120)
    workers = service.client.get("/admin/rulesets").json()["workers"]
    assert workers["kind"] == "processes" and workers["size"] == 2 and workers["ready"] == 2
    assert len(workers["pids"]) == 2 and os.getpid() not in workers["pids"]
    assert {"restarts", "crashes", "timeouts", "quarantined_calls"} <= set(workers)


def test_the_pool_gives_the_in_process_cards_on_every_synthea_bundle(engine):
    """Byte-identical cards (but for per-call uuids and "now") through two worker processes."""
    import json
    import pickle

    from cds.service.bench_http import DEFAULT_BUNDLES, SERVICES, build_requests
    from cds.service.catalog import build_catalog
    from cds.workers import WorkerPool
    from cds.workers.pool import WorkerSpec

    paths = sorted(DEFAULT_BUNDLES.glob("*.json"))
    if not paths:
        pytest.skip(f"no Synthea bundles in {DEFAULT_BUNDLES}")
    catalog = build_catalog(engine)
    pool = WorkerPool(WorkerSpec(pickle.dumps(engine.ruleset), engine.digest), size=2, max_pending=1000).start()
    try:
        requests = [(hook, build_requests(json.loads(path.read_text(encoding="utf-8")), hook,
                                          catalog[SERVICES[hook]].prefetch))
                    for path in paths for hook in SERVICES]
        futures = [pool.submit(request, hook) for hook, request in requests]  # both workers busy
        fired = 0
        for (hook, request), future in zip(requests, futures, strict=True):
            summary = future.result(timeout=120)
            direct = engine.evaluate(request, hook=hook)
            assert comparable(summary.response["cards"]) == comparable(direct.response.to_json()["cards"]), hook
            assert summary.rule_versions == direct.rule_versions and summary.ruleset_digest == engine.digest
            assert summary.notes == direct.facts.notes
            fired += len(summary.response["cards"])
        assert fired > 0  # the comparison covered real cards
        assert pool.stats()["crashes"] == 0 and pool.stats()["calls"] == len(requests)
    finally:
        pool.close()


def test_quarantine_counts_losses_per_payload_and_expires():
    from cds.workers import Quarantine, WorkerCrashed, WorkerTimeout

    now = [1000.0]
    quarantine = Quarantine(after=2, seconds=60, clock=lambda: now[0])
    assert quarantine.record("a", WorkerCrashed) is False and quarantine.check("a") is None
    assert quarantine.record("b", WorkerTimeout) is False  # another payload does not add up with "a"
    now[0] += 30
    assert quarantine.record("a", WorkerCrashed) is True
    assert quarantine.check("a") is WorkerCrashed and quarantine.check("b") is None and len(quarantine) == 1
    now[0] += 61
    assert quarantine.check("a") is None and len(quarantine) == 0  # served again after the quarantine
    now[0] += 100
    quarantine.record("c", WorkerTimeout)
    now[0] += 61  # losses further apart than the window do not add up
    assert quarantine.record("c", WorkerTimeout) is False


def test_durable_rules_never_loads_in_the_service_process(tmp_path):
    """Start-up checks, a real call and a reload: durable_rules runs in child processes only."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from cds.service.app import create_app
        from cds.service.config import Settings
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from svc_support import full_prefetch, hook_request, patient_resources

        app = create_app(Settings(data_dir={str(tmp_path)!r}, engine_workers=1, rule_tests_on_start=True,
                                  admin_token="adm"))
        with TestClient(app) as client:
            service = client.get("/cds-services").json()["services"][0]
            body = hook_request(service["hook"], "pid-1",
                                prefetch=full_prefetch(service["prefetch"], patient_resources("pid-1")))
            answer = client.post("/cds-services/" + service["id"], json=body)
            assert answer.status_code == 200, answer.text
            reload = client.post("/admin/reload", headers={{"Authorization": "Bearer adm"}})
            assert reload.status_code == 200, reload.text
        loaded = sorted(name for name in sys.modules if name.split(".")[0] == "durable")
        print("DURABLE", loaded)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DURABLE []" in done.stdout, done.stdout


def test_the_pool_bounds_pending_calls_with_503(start_service, monkeypatch):
    monkeypatch.setenv("CDS_FAULT_INJECT_SLOW_PATIENT", "busy")
    monkeypatch.setenv("CDS_FAULT_INJECT_SLOW_S", "1.5")
    service = start_service(engine_workers=1, max_pending_evaluations=1)
    pool = _pool(service)
    assert pool.wait_ready(timeout=120)
    body = _body(service, "busy")

    def post(_n: int) -> httpx.Response:
        with httpx.Client(base_url=service.url, timeout=60) as http:
            return http.post(SERVICE, json={**body, "hookInstance": str(__import__("uuid").uuid4())})

    with ThreadPoolExecutor(3) as threads:
        responses = list(threads.map(post, range(3)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and 503 in statuses, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["issue"][0]["code"] == "transient"
