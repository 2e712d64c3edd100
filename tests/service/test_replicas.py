"""Replicas: two real ``cds serve`` processes on one PostgreSQL database refuse a replayed JWT.

The jti replay cache lives in the database (``cds_jti``), so the same signed token accepted by one
replica is refused by the other. Each process's output goes to a file (never a pipe of a live process);
ports are chosen by the kernel (``--port 0``) and read back from uvicorn's start-up line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select

from cds.service.db import make_engine, make_sessionmaker, migrate
from cds.service.replay import DatabaseReplayCache, JtiRecord

from svc_support import ec_key, make_token, stop_process

ISS = "https://ehr.example.org"
PUBLIC = "https://cds.example.org/sir"  # the load balancer's URL: the same for every replica
EC = ec_key("ec-replica")
_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def _start(tmp_path: Path, name: str, database_url: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({
        "CDS_TRUSTED_ISSUERS": json.dumps({ISS: {"jwks": {"keys": [EC.jwk]}}}),
        "CDS_PUBLIC_BASE_URL": PUBLIC,
        "CDS_DATABASE_URL": database_url,
    })
    log_path = tmp_path / f"{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cds.service", "--port", "0", "--workers", "1", "--data-dir",
             str(tmp_path / name), "--log-level", "info"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return process, log_path


def _port(process: subprocess.Popen, log_path: Path) -> int:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = _RUNNING.search(log_path.read_text())
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"cds serve did not start:\n{log_path.read_text()}")




@pytest.fixture()
def fresh_pg_url():
    """A new, empty schema (replicas start on a database nobody has migrated yet)."""
    import uuid

    dsn = os.environ.get("CDS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        admin = psycopg.connect(dsn, connect_timeout=3, autocommit=True)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL not reachable at {dsn}: {' '.join(str(exc).split())}")
    schema = f"cds_replicas_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


@pytest.mark.postgres
def test_a_token_replayed_to_another_replica_is_refused(fresh_pg_url, tmp_path):
    """Both replicas start at once on an empty database (one migrates, the other waits for it)."""
    replicas = [_start(tmp_path, name, fresh_pg_url) for name in ("replica-a", "replica-b")]
    try:
        ports = [_port(process, log) for process, log in replicas]
        token = make_token(EC, iss=ISS, aud=PUBLIC + "/cds-services")
        headers = {"Authorization": f"Bearer {token}"}
        first = httpx.get(f"http://127.0.0.1:{ports[0]}/cds-services", headers=headers, timeout=30)
        assert first.status_code == 200, first.text
        replayed = httpx.get(f"http://127.0.0.1:{ports[1]}/cds-services", headers=headers, timeout=30)
        assert replayed.status_code == 401, replayed.text
        # a fresh token is fine on either replica: the refusal is about the jti, not the replica
        fresh = make_token(EC, iss=ISS, aud=PUBLIC + "/cds-services")
        assert httpx.get(f"http://127.0.0.1:{ports[1]}/cds-services",
                         headers={"Authorization": f"Bearer {fresh}"}, timeout=30).status_code == 200
        # and the Host header is never the audience: a token for the replica's own URL is refused
        own = make_token(EC, iss=ISS, aud=f"http://127.0.0.1:{ports[1]}/cds-services")
        assert httpx.get(f"http://127.0.0.1:{ports[1]}/cds-services",
                         headers={"Authorization": f"Bearer {own}"}, timeout=30).status_code == 401
    finally:
        for process, _log in replicas:
            stop_process(process)
    for process, log in replicas:
        assert process.returncode == 0, log.read_text()
    assert "replayed" in replicas[1][1].read_text() and "replayed" not in replicas[0][1].read_text()


def test_the_database_cache_refuses_replays_and_forgets_expired_tokens(db_url):
    db = make_engine(db_url)
    try:
        migrate(db)
        with make_sessionmaker(db)() as session:  # the PostgreSQL schema is shared with other tests
            session.execute(delete(JtiRecord))
            session.commit()
        cache = DatabaseReplayCache(make_sessionmaker(db))
        later = time.time() + 300
        assert cache.check_and_add(ISS, "jti-1", later) is True
        assert cache.check_and_add(ISS, "jti-1", later) is False
        assert cache.check_and_add("https://other.example.org", "jti-1", later) is True  # per issuer
        # an expired entry not yet cleaned up does not refuse a (new) token with that jti
        assert cache.check_and_add(ISS, "jti-old", time.time() - 5) is True
        assert cache.check_and_add(ISS, "jti-old", later) is True
        assert cache.check_and_add(ISS, "jti-gone", time.time() - 5) is True
        assert cache.cleanup() == 1
        with make_sessionmaker(db)() as session:
            rows = session.execute(select(JtiRecord)).scalars().all()
        expiries = [r.expires_at if r.expires_at.tzinfo else r.expires_at.replace(tzinfo=UTC) for r in rows]
        assert len(rows) == 3 and all(e > datetime.now(UTC) - timedelta(seconds=1) for e in expiries)
    finally:
        db.dispose()


_MIGRATE = """
import sys, time
from pathlib import Path
from cds.service.db import make_engine, migrate
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
migrate(make_engine(sys.argv[1]))
"""


@pytest.mark.postgres
def test_replicas_migrating_at_the_same_moment_do_not_collide(fresh_pg_url, tmp_path):
    """Three processes (as replicas starting together) migrate one empty database at the same moment."""
    go = tmp_path / "go"
    logs = [tmp_path / f"migrate{i}.log" for i in range(3)]
    processes = []
    for log_path in logs:
        with log_path.open("w") as log:
            processes.append(subprocess.Popen([sys.executable, "-c", _MIGRATE, fresh_pg_url, str(go)],
                                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    time.sleep(3)  # all imported and waiting (polled below in any case)
    go.touch()
    try:
        for process in processes:
            process.wait(timeout=120)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert [p.returncode for p in processes] == [0, 0, 0], "\n".join(log.read_text() for log in logs)
    db = make_engine(fresh_pg_url)
    try:
        with make_sessionmaker(db)() as session:
            assert session.execute(select(JtiRecord)).scalars().all() == []  # the schema is there
    finally:
        db.dispose()
