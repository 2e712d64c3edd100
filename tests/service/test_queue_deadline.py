"""Bounded waits (issue 10, item 3, the engine queue): a call that waited for an engine worker longer
than ``CDS_QUEUE_DEADLINE_S`` is answered 503 + Retry-After at the deadline instead of running late,
and its audit row says so. Real worker processes (one), made slow with the test-only fault hook."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import select

from cds.service.models import CallRecord

from svc_support import full_prefetch, hook_request, patient_resources

SERVICE = "/cds-services/sir-patient-view"


def _body(service, pid: str) -> dict:
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    return hook_request("patient-view", pid, prefetch=full_prefetch(templates, patient_resources(pid)))


def _timed_post(url: str, body: dict) -> tuple[int, float, httpx.Response]:
    started = time.monotonic()
    response = httpx.post(f"{url}{SERVICE}", json=body, timeout=60)
    return response.status_code, time.monotonic() - started, response


def test_a_call_queued_past_the_deadline_gets_503_at_the_deadline(start_service, monkeypatch):
    monkeypatch.setenv("CDS_FAULT_INJECT_SLOW_PATIENT", "slow")  # 7 s in the worker (< 10 s engine timeout)
    monkeypatch.setenv("CDS_FAULT_INJECT_SLOW_S", "7")
    service = start_service(engine_workers=1, queue_deadline_s=1.0)
    pool = service.state.holder.current().evaluator
    assert pool.wait_ready(timeout=120), pool.stats()
    quick = service.client.post(SERVICE, json=_body(service, "quick-0"))
    assert quick.status_code == 200  # an idle worker: well within the deadline

    slow_body = _body(service, "slow")
    waiting = [_body(service, f"quick-{i}") for i in range(1, 4)]
    with ThreadPoolExecutor(4) as threads:
        slow = threads.submit(_timed_post, service.url, slow_body)
        deadline = time.monotonic() + 30
        while pool.pid_serving(slow_body["hookInstance"]) is None:  # the slow call holds the only worker
            assert time.monotonic() < deadline, "the slow call never reached the worker"
            time.sleep(0.02)
        queued = [threads.submit(_timed_post, service.url, body) for body in waiting]
        results = [future.result(timeout=60) for future in queued]
        slow_status, slow_elapsed, _ = slow.result(timeout=60)

    assert slow_status == 200 and slow_elapsed >= 7  # a call that started runs to its end
    for status, elapsed, response in results:
        assert status == 503, response.text
        assert response.headers["retry-after"] == "2"
        issue = response.json()["issue"][0]
        assert issue["code"] == "transient" and "deadline 1 s" in issue["diagnostics"]
        assert elapsed < 5, f"answered after {elapsed:.1f} s: it waited for the worker, not the deadline"
    with service.state.sessions() as session:
        rows = session.execute(select(CallRecord).where(
            CallRecord.hook_instance.in_([b["hookInstance"] for b in waiting]))).scalars().all()
    assert sorted((r.outcome, r.http_status) for r in rows) == [("queue-deadline", 503)] * 3
    assert all(r.card_uuids == [] and "rule engine" in r.error for r in rows)
    assert pool.stats()["queue_deadline_expired"] == 3
    # none of them ran late: the worker is free and serves the next call at once
    after_status, after_elapsed, after = _timed_post(service.url, _body(service, "quick-after"))
    assert after_status == 200 and after_elapsed < 30, (after_status, after_elapsed)
    assert [c["source"]["topic"]["code"] for c in after.json()["cards"]] == ["sir-suspected"]
