"""Concurrency: many clients at once get exactly the serial answers; the event loop never blocks."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from cds.service.models import CallRecord

from svc_support import comparable, full_prefetch, hook_request, patient_resources

SERVICE = "/cds-services/sir-patient-view"
CLIENTS = 6
ROUNDS = 5


def test_concurrent_clients_get_the_serial_cards(service, fhir):
    base, store = fhir
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    patients = {
        "l-high": patient_resources("l-high", insulin=40, bmi=22),
        "l-low": patient_resources("l-low", insulin=8, bmi=22),
        "l-obese": patient_resources("l-obese", insulin=40, bmi=36),
        "l-paged": patient_resources("l-paged", insulin=55, bmi=24, extra_observations=6),
    }
    for pid, resources in patients.items():
        store.add_patient(pid, resources)

    def body(pid: str, via_fhir: bool) -> dict:
        if via_fhir:  # async FHIR I/O interleaved with queued evaluations
            return hook_request("patient-view", pid, fhir_server=base, token="load-token")
        return hook_request("patient-view", pid, prefetch=full_prefetch(templates, patients[pid]))

    serial = {}
    for pid in patients:
        response = service.client.post(SERVICE, json=body(pid, False))
        assert response.status_code == 200
        serial[pid] = comparable(response.json()["cards"])
    assert serial["l-high"] and serial["l-paged"] and not serial["l-low"]

    start = threading.Barrier(CLIENTS)

    def client(n: int) -> list[tuple[str, int, list]]:
        results = []
        with httpx.Client(base_url=service.url, timeout=60) as http:
            start.wait()
            for i in range(ROUNDS):
                pid = list(patients)[(n + i) % len(patients)]
                response = http.post(SERVICE, json=body(pid, via_fhir=(n + i) % 3 == 0))
                results.append((pid, response.status_code,
                                comparable(response.json().get("cards", [])) if response.status_code == 200
                                else response.text))
        return results

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [r for batch in pool.map(client, range(CLIENTS)) for r in batch]
    assert len(results) == CLIENTS * ROUNDS
    assert [r for r in results if r[1] != 200] == []
    for pid, _status, cards in results:
        assert cards == serial[pid], pid
    pool = service.state.holder.current().evaluator
    assert pool.stats()["kind"] == "processes"  # the real rules in engine worker processes
    assert pool.peak_pending > 1  # requests really overlapped and queued
    assert pool.pending == 0
    with service.state.sessions() as session:
        stored = session.execute(select(func.count()).select_from(CallRecord).where(
            CallRecord.patient_id.in_(list(patients)), CallRecord.outcome == "ok")).scalar_one()
    assert stored == CLIENTS * ROUNDS + len(patients)


class SlowEngine:
    """The real engine, slowed down, to make evaluations overlap deterministically."""

    def __init__(self, engine, delay: float) -> None:
        self._engine, self._delay = engine, delay
        self.ruleset, self.rules, self.digest = engine.ruleset, engine.rules, engine.digest
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def evaluate(self, *args, **kwargs):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self._delay)
            return self._engine.evaluate(*args, **kwargs)
        finally:
            with self._lock:
                self.active -= 1


def test_evaluations_run_one_at_a_time_off_the_event_loop(start_service, engine):
    slow = SlowEngine(engine, delay=0.3)
    service = start_service(engine_override=slow)
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    body = hook_request("patient-view", "q1", prefetch=full_prefetch(templates, patient_resources("q1")))

    def post() -> int:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            return http.post(SERVICE, json=body).status_code

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(post) for _ in range(4)]
        time.sleep(0.15)  # evaluations are queued now
        started = time.perf_counter()
        discovery = service.client.get("/cds-services")
        discovery_s = time.perf_counter() - started
        statuses = [f.result() for f in futures]
    assert statuses == [200] * 4
    assert slow.max_active == 1  # the engine never saw two callers
    assert discovery.status_code == 200
    # 4 x 0.3 s of evaluations are queued: a blocked event loop would answer after about 1 s
    assert discovery_s < 0.6, f"discovery waited {discovery_s:.2f}s behind evaluations"


def test_a_full_queue_answers_503_with_retry_after(start_service, engine):
    service = start_service(engine_override=SlowEngine(engine, delay=0.4), max_pending_evaluations=1)
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    body = hook_request("patient-view", "q2", prefetch=full_prefetch(templates, patient_resources("q2")))

    def post() -> httpx.Response:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            return http.post(SERVICE, json=body)

    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: post(), range(3)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and 503 in statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["issue"][0]["code"] == "transient"
