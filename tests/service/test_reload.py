"""Safe reload through the running service (issue 5): new rules go live without a restart, only after
they validate and their own tests pass; a bad change leaves the old rules serving and says why.

Real uvicorn on 127.0.0.1, a real httpx client, a copy of the built-in rulesets in tmp_path holding
only metformin-renal (so the edit below concerns one rule and its tests).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds.service.app import create_app
from cds.service.config import Settings

from svc_support import LOINC, RXNORM, UCUM, ServerThread, full_prefetch, hook_request

ROOT = Path(__file__).resolve().parents[2]

NEW_TESTS = """\
rule: metformin-renal
now: "2026-11-01T09:00:00Z"
defaults:
  patient: {age: 58, gender: male, bmi: 27}
cases:
  - name: active metformin with eGFR 32 is now below the stop threshold of 35
    data:
      - LOINC#98979-8 32 mL/min/{1.73_m2} 1 month ago
      - RXNORM#861007 active
    expect: fires
    indicator: warning
  - name: active metformin with eGFR 40 stays informational
    data:
      - LOINC#98979-8 40 mL/min/{1.73_m2} 1 month ago
      - RXNORM#861007 active
    expect: fires
    indicator: info
  - name: eGFR 50 is fine
    data:
      - LOINC#98979-8 50 mL/min/{1.73_m2} 1 month ago
      - RXNORM#861007 active
    expect: silent
"""


@pytest.fixture()
def rulesets(tmp_path: Path) -> Path:
    target = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", target, ignore=shutil.ignore_patterns("__pycache__", "conftest.py"))
    for path in (target / "rules").glob("*.yaml"):
        if not path.name.startswith("metformin-renal."):
            path.unlink()
    return target


def _serve(rulesets: Path, tmp_path: Path, **settings: Any) -> tuple[ServerThread, Any]:
    settings.setdefault("engine_workers", 2)
    app = create_app(Settings(rulesets=rulesets, data_dir=tmp_path / "data", **settings))
    return ServerThread(app).__enter__(), app


@pytest.fixture()
def service(rulesets: Path, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    import httpx

    thread, app = _serve(rulesets, tmp_path)
    client = httpx.Client(base_url=thread.url, timeout=60)
    try:
        yield client, app
    finally:
        client.close()
        thread.__exit__(None, None, None)


def _patient_view(client: Any) -> list[dict[str, Any]]:
    pid = "renal-1"
    resources = [
        {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1968-02-01"},
        {"resourceType": "Observation", "id": "egfr-1", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "98979-8"}]}, "subject": {"reference": f"Patient/{pid}"},
         "effectiveDateTime": "2026-10-01T09:00:00Z",
         "valueQuantity": {"value": 32, "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}"}},
        {"resourceType": "MedicationRequest", "id": "met-1", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "861007"}]},
         "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2026-01-01"},
    ]
    templates = next(s["prefetch"] for s in client.get("/cds-services").json()["services"] if s["hook"] == "patient-view")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    body = hook_request("patient-view", pid, prefetch=full_prefetch(templates, by_type))
    response = client.post("/cds-services/sir-patient-view", json=body)
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose (the pool reaps it when it joins)
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _renal(cards: list[dict[str, Any]]) -> tuple[str, str]:
    found = [(c["indicator"], c["source"]["topic"]["version"]) for c in cards
             if c["source"]["topic"]["code"] == "metformin-renal"]
    assert len(found) == 1, cards
    return found[0]


def _set_threshold(rulesets: Path, value: int) -> None:
    path = rulesets / "definitions.yaml"
    text = path.read_text()
    marker = "  metformin_egfr_stop:\n    value: 30\n"
    assert marker in text
    path.write_text(text.replace(marker, f"  metformin_egfr_stop:\n    value: {value}\n"))


def _shipped_version(rule_id: str) -> str:
    import yaml

    from cds.resources import builtin_rulesets_dir

    spec = yaml.safe_load((builtin_rulesets_dir() / "rules" / f"{rule_id}.yaml").read_text())
    return str(spec["version"])


# the shipped metformin-renal version (read from the rule file: authors bump it), and the one a reload
# test bumps it to (with its changelog line, which the rule schema requires to match the version)
OLD_VERSION = _shipped_version("metformin-renal")
NEW_VERSION = "99.0.0"


def _bump_version(rulesets: Path) -> None:
    path = rulesets / "rules" / "metformin-renal.yaml"
    text = path.read_text().replace(f"version: {OLD_VERSION}", f"version: {NEW_VERSION}", 1)
    entry = f'  - {{version: "{NEW_VERSION}", date: "2026-12-02", change: "threshold 35 (test)"}}\n'
    text = text.replace("changelog:\n", "changelog:\n" + entry, 1)
    path.write_text(text)


def test_threshold_change_is_refused_until_its_tests_agree_then_served_without_restart(service: Any, rulesets: Path) -> None:
    client, app = service
    assert _renal(_patient_view(client)) == ("info", OLD_VERSION)  # 30 <= 32 < 45
    before = client.get("/admin/rulesets").json()["digest"]
    old_pool = app.state.cds.holder.current().evaluator
    assert old_pool.wait_ready(timeout=120)
    old_pids = set(old_pool.pids())

    _set_threshold(rulesets, 35)
    _bump_version(rulesets)
    refused = client.post("/admin/reload")
    assert refused.status_code == 409
    body = refused.json()
    assert body["ok"] is False and body["test_failures"], body
    assert any("expected indicator: warning, got indicator: critical" in f for f in body["test_failures"]), body
    assert _renal(_patient_view(client)) == ("info", OLD_VERSION)  # the old rules still serve
    assert client.get("/admin/rulesets").json()["digest"] == before
    # a refused candidate changes nothing: same pool, same worker processes
    assert app.state.cds.holder.current().evaluator is old_pool and set(old_pool.pids()) == old_pids
    assert old_pool.stats()["restarts"] == 0

    (rulesets / "rules" / "metformin-renal.test.yaml").write_text(NEW_TESTS)
    accepted = client.post("/admin/reload")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["changed"] is True
    assert _renal(_patient_view(client)) == ("warning", NEW_VERSION)  # 32 < 35: the new rule, no restart
    status = client.get("/admin/rulesets").json()
    assert status["digest"] != before
    assert {"id": "metformin-renal", "version": NEW_VERSION, "status": "active"} in status["rules"]
    # new worker processes serve the new digest; the old ones are retired once idle
    assert status["workers"]["digest"] == status["digest"] and status["workers"]["ready"] == 2
    assert not set(status["workers"]["pids"]) & old_pids
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in old_pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in old_pids), "the old workers were not retired"

    unchanged = client.post("/admin/reload")
    assert unchanged.status_code == 200 and unchanged.json()["changed"] is False


def test_broken_yaml_is_refused_with_file_and_line(service: Any, rulesets: Path) -> None:
    client, _app = service
    path = rulesets / "rules" / "metformin-renal.yaml"
    path.write_text(path.read_text().replace("status: active", "status: [active", 1))
    refused = client.post("/admin/reload")
    assert refused.status_code == 409
    assert any("metformin-renal.yaml:" in issue for issue in refused.json()["issues"]), refused.json()
    assert _renal(_patient_view(client)) == ("info", OLD_VERSION)


def test_audit_records_the_version_that_produced_each_card(service: Any, rulesets: Path) -> None:
    client, app = service
    _patient_view(client)
    from sqlalchemy import text

    with app.state.cds.db.connect() as conn:
        rows = conn.execute(text("SELECT rule_id, rule_version FROM cds_card")).all()
    assert ("metformin-renal", OLD_VERSION) in [tuple(r) for r in rows]


def test_admin_needs_the_token_when_one_is_configured(rulesets: Path, tmp_path: Path) -> None:
    import httpx

    thread, _app = _serve(rulesets, tmp_path, admin_token="s3cret-admin", rule_tests_on_start=False)
    try:
        with httpx.Client(base_url=thread.url, timeout=60) as client:
            assert client.post("/admin/reload").status_code == 403
            assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
            ok = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret-admin"})
            assert ok.status_code == 200 and ok.json()["changed"] is False
    finally:
        thread.__exit__(None, None, None)


def test_watcher_serves_a_validated_change_without_an_admin_call(rulesets: Path, tmp_path: Path) -> None:
    import httpx

    thread, _app = _serve(rulesets, tmp_path, reload_watch=True, rule_tests_on_start=False)
    try:
        with httpx.Client(base_url=thread.url, timeout=60) as client:
            assert _renal(_patient_view(client)) == ("info", OLD_VERSION)
            time.sleep(0.5)  # let the watcher start
            (rulesets / "rules" / "metformin-renal.test.yaml").write_text(NEW_TESTS)
            _set_threshold(rulesets, 35)
            _bump_version(rulesets)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _renal(_patient_view(client)) != ("warning", NEW_VERSION):
                time.sleep(0.5)
            assert _renal(_patient_view(client)) == ("warning", NEW_VERSION)
    finally:
        thread.__exit__(None, None, None)


def test_service_refuses_to_start_when_rule_tests_fail(rulesets: Path, tmp_path: Path) -> None:
    from cds._exceptions import RulesetError

    _set_threshold(rulesets, 35)  # the shipped metformin-renal tests expect 30
    with pytest.raises(RulesetError) as refused:
        create_app(Settings(rulesets=rulesets, data_dir=tmp_path / "data"))
    assert "metformin-renal" in str(refused.value)


def test_in_flight_calls_finish_on_the_old_rules_during_a_reload(rulesets: Path, tmp_path: Path, monkeypatch) -> None:
    """Calls running on the old workers when the new ones are swapped in are answered by the old rules."""
    import httpx
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("CDS_FAULT_INJECT_SLOW_PATIENT", "renal-1")  # every probe call holds a worker 4 s
    monkeypatch.setenv("CDS_FAULT_INJECT_SLOW_S", "4")
    # 16 s of queued work on purpose: the queue deadline (CDS_QUEUE_DEADLINE_S, 5 s) would shed it
    thread, app = _serve(rulesets, tmp_path, rule_tests_on_start=False, queue_deadline_s=120)
    try:
        with httpx.Client(base_url=thread.url, timeout=120) as client:
            assert _renal(_patient_view(client)) == ("info", OLD_VERSION)
            (rulesets / "rules" / "metformin-renal.test.yaml").write_text(NEW_TESTS)
            _set_threshold(rulesets, 35)
            _bump_version(rulesets)
            holder = app.state.cds.holder
            old_pool = holder.current().evaluator

            def probe() -> tuple[str, str]:
                with httpx.Client(base_url=thread.url, timeout=120) as http:
                    return _renal(_patient_view(http))

            with ThreadPoolExecutor(8) as pool:
                in_flight = [pool.submit(probe) for _ in range(8)]  # 8 x 4 s on 2 workers: 16 s of work
                deadline = time.monotonic() + 30
                while old_pool.pending < 8 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert old_pool.pending == 8 and old_pool.stats()["busy"] == 2
                reloaded = client.post("/admin/reload")  # checks + new workers take seconds, not 16
                assert reloaded.status_code == 200 and reloaded.json()["changed"], reloaded.text
                assert holder.current().evaluator is not old_pool
                assert old_pool.pending > 0  # calls were still queued or running on the old workers at the swap
                assert [f.result(timeout=120) for f in in_flight] == [("info", OLD_VERSION)] * 8
            assert _renal(_patient_view(client)) == ("warning", NEW_VERSION)
    finally:
        thread.__exit__(None, None, None)


def test_a_candidate_that_crashes_the_check_process_changes_nothing(service: Any, rulesets: Path, monkeypatch) -> None:
    """The candidate is compiled and tested in a throwaway process: its crash refuses the reload, nothing else."""
    client, app = service
    pool = app.state.cds.holder.current().evaluator
    assert pool.wait_ready(timeout=120)
    pids = set(pool.pids())
    (rulesets / "rules" / "metformin-renal.test.yaml").write_text(NEW_TESTS)
    _set_threshold(rulesets, 35)
    monkeypatch.setenv("CDS_FAULT_INJECT_CRASH_CHECK", "1")  # TEST-ONLY hook: the check process SIGSEGVs
    refused = client.post("/admin/reload")
    assert refused.status_code == 409, refused.text
    assert any("died (signal SIGSEGV)" in issue for issue in refused.json()["issues"]), refused.json()
    assert app.state.cds.holder.current().evaluator is pool and set(pool.pids()) == pids
    assert _renal(_patient_view(client)) == ("info", OLD_VERSION)  # the service answers, old rules
    monkeypatch.delenv("CDS_FAULT_INJECT_CRASH_CHECK")
    assert client.post("/admin/reload").status_code == 200  # the same candidate, checked normally


def test_discovery_answers_before_the_workers_are_ready(rulesets: Path, tmp_path: Path) -> None:
    """Start-up does not wait for the engine workers: they start in parallel, calls queue until one is ready."""
    import httpx

    thread, app = _serve(rulesets, tmp_path, rule_tests_on_start=False, engine_workers=2)
    try:
        pool = app.state.cds.holder.current().evaluator
        discovery = httpx.get(f"{thread.url}/cds-services", timeout=10)
        ready_then = pool.ready_count()
        assert discovery.status_code == 200 and ready_then < 2, ready_then
        with httpx.Client(base_url=thread.url, timeout=120) as client:
            assert _renal(_patient_view(client)) == ("info", OLD_VERSION)  # waits for a worker, then answers
        assert pool.wait_ready(timeout=120)
    finally:
        thread.__exit__(None, None, None)
