"""HTTP latency benchmark: the real ``cds serve`` in a subprocess, the Synthea bundles as prefetch.

Each bundle is posted as one prefetch value (the other template keys null: "no data") to every hook's
service, ``iterations`` times, from ``concurrency`` client threads with keep-alive connections.
Reported per hook: p50/p95/p99/mean/max latency in ms as the client sees it (JSON encoding of the
request excluded, reading the response included) and overall requests/s; with ``baseline`` the same
payloads are also evaluated in-process (no HTTP) so the HTTP/DB overhead is visible.

``--clients 1,2,4,8`` runs one server and, for each level in turn, the whole workload from that many
concurrent clients, printing requests/s and p50/p95/p99 per level: how throughput scales with the
engine workers (``--workers``, default the server's: one per core).

``--queue-deadline S`` starts the server with ``CDS_QUEUE_DEADLINE_S=S`` (a bounded load run): calls
that would wait longer for an engine worker are answered 503 + Retry-After, counted apart from errors
(``refused``), and ``--verify-audit`` then counts the audit rows in the server's database: every 200
must have its row (``audit.acknowledged_without_row`` must be 0; the exit status says so).

Run: ``python -m cds.service.bench_http [--iterations 5] [--clients 1,2,4,8] [--workers N] [--json]``;
the bounded load run of issue 10: ``--clients 64 --queue-deadline 5 --verify-audit --no-baseline``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

__all__ = ["DEFAULT_BUNDLES", "build_requests", "percentile", "run_benchmark"]



def _find_bundles() -> Path:
    """The 40 Synthea R4 bundles: ``CDS_BENCH_BUNDLES``, else ``shared/data/synthea-r4`` in a parent folder
    of the checkout (``../shared`` beside it, or further up for git worktrees)."""
    configured = os.environ.get("CDS_BENCH_BUNDLES")
    if configured:
        return Path(configured)
    here = Path(__file__).resolve()
    for parent in here.parents[2:]:
        candidate = parent / "shared" / "data" / "synthea-r4"
        if candidate.is_dir():
            return candidate
    return here.parents[3] / "shared" / "data" / "synthea-r4"


DEFAULT_BUNDLES = _find_bundles()
SERVICES = {"patient-view": "sir-patient-view", "order-select": "sir-order-select", "order-sign": "sir-order-sign"}
_INSTANCE = "00000000-0000-4000-8000-000000000000"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def _patient_id(bundle: dict[str, Any]) -> str:
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Patient" and resource.get("id"):
            return resource["id"]
    raise ValueError("bundle has no Patient")


def _draft_order(patient_id: str) -> dict[str, Any]:
    """A draft metformin order (first RxNorm code of the shipped metformin value set)."""
    from cds.valuesets import load_valuesets

    code = load_valuesets()["metformin"].codes_for("RXNORM")[0]
    return {"resourceType": "MedicationRequest", "id": "bench-draft-1", "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                      "code": code}]},
            "subject": {"reference": f"Patient/{patient_id}"}}


def build_requests(bundle: dict[str, Any], hook: str, templates: dict[str, str]) -> dict[str, Any]:
    """A CDS Hooks request for ``hook`` whose prefetch is the whole bundle (other keys null)."""
    pid = _patient_id(bundle)
    context: dict[str, Any] = {"userId": "Practitioner/bench", "patientId": pid}
    if hook != "patient-view":
        draft = _draft_order(pid)
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}
        if hook == "order-select":
            context["selections"] = [f"MedicationRequest/{draft['id']}"]
    prefetch: dict[str, Any] = dict.fromkeys(templates)
    prefetch["bundle"] = bundle
    return {"hook": hook, "hookInstance": _INSTANCE, "context": context, "prefetch": prefetch}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(port: int, data_dir: Path, rulesets: Path | None, workers: int | None = None,
                  extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")} | (extra_env or {})
    args = [sys.executable, "-m", "cds.service", "--port", str(port), "--data-dir", str(data_dir),
            "--log-level", "warning"]
    if rulesets:
        args += ["--rulesets", str(rulesets)]
    if workers:
        # main's service has no --workers option: pass it only when asked (before/after comparisons)
        args += ["--workers", str(workers)]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/cds-services", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not start:\n{process.communicate()[0]}")
        time.sleep(0.1)


def _summary(latencies: list[float]) -> dict[str, float]:
    return {"n": len(latencies), "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99), "mean": statistics.fmean(latencies), "max": max(latencies)}


def run_benchmark(
    *,
    bundles_dir: Path = DEFAULT_BUNDLES,
    iterations: int = 5,
    concurrency: int = 1,
    clients: Sequence[int] | None = None,
    hooks: Sequence[str] = tuple(SERVICES),
    rulesets: Path | None = None,
    limit: int | None = None,
    baseline: bool = True,
    workers: int | None = None,
    queue_deadline_s: float | None = None,
    verify_audit: bool = False,
) -> dict[str, Any]:
    """Start the server, post every bundle to every hook ``iterations`` times, return the figures.

    With ``clients`` (e.g. ``[1, 2, 4, 8]``) the workload is run once per level on the same server and
    the report has one entry per level under ``levels``; otherwise one run at ``concurrency``.
    """
    paths = sorted(bundles_dir.glob("*.json"))[:limit]
    if not paths:
        raise FileNotFoundError(f"no *.json bundles in {bundles_dir} (set --bundles or CDS_BENCH_BUNDLES)")
    bundles = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    levels = list(clients) if clients else [concurrency]
    port = _free_port()
    extra_env = {"CDS_QUEUE_DEADLINE_S": str(queue_deadline_s)} if queue_deadline_s else {}
    acknowledged: list[str] = []
    audit: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as data_dir:
        server = _start_server(port, Path(data_dir), rulesets, workers, extra_env)
        try:
            base = f"http://127.0.0.1:{port}"
            services = {s["hook"]: s for s in httpx.get(f"{base}/cds-services", timeout=60).json()["services"]}
            # Pre-encode each request once; only the hookInstance changes between posts.
            jobs: list[tuple[str, bytes]] = []
            for hook in hooks:
                for bundle in bundles:
                    body = json.dumps(build_requests(bundle, hook, services[hook]["prefetch"])).encode()
                    jobs.append((hook, body))
            work = [job for _ in range(iterations) for job in jobs]

            def worker(share: list[tuple[str, bytes]]) -> list[tuple[str, float, int, int]]:
                out = []
                with httpx.Client(base_url=base, timeout=300,
                                  headers={"content-type": "application/json"}) as client:
                    for hook, body in share:
                        instance = str(uuid.uuid4())
                        payload = body.replace(_INSTANCE.encode(), instance.encode(), 1)
                        started = time.perf_counter()
                        response = client.post(f"/cds-services/{SERVICES[hook]}", content=payload)
                        n_cards = len(response.json().get("cards", [])) if response.status_code == 200 else 0
                        out.append((hook, (time.perf_counter() - started) * 1000, response.status_code, n_cards))
                        if response.status_code == 200:
                            acknowledged.append(instance)  # list.append is atomic across threads
                return out

            # warm-up: every worker busy once per hook (imports, caches, SQLite file, workers compiled)
            warm = [next(job for job in jobs if job[0] == hook) for hook in hooks]
            with ThreadPoolExecutor(max(levels)) as pool:
                list(pool.map(worker, [warm] * max(levels)))
            runs = []
            for level in levels:
                shares = [work[i::level] for i in range(level)]
                started = time.perf_counter()
                with ThreadPoolExecutor(level) as pool:
                    results = [r for batch in pool.map(worker, shares) for r in batch]
                runs.append(_level_report(level, results, time.perf_counter() - started, hooks))
            if verify_audit:
                audit = _count_audit_rows(Path(data_dir), acknowledged)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    report: dict[str, Any] = {"bundles": len(bundles), "iterations": iterations, "workers": workers,
                              "queue_deadline_s": queue_deadline_s,
                              **{k: v for k, v in runs[-1].items() if k != "clients"},
                              "concurrency": runs[-1]["clients"], "levels": runs}
    if audit is not None:
        report["audit"] = audit
    if baseline:
        report["engine_only"] = _baseline(bundles, hooks, rulesets, services)
    return report


def _count_audit_rows(data_dir: Path, acknowledged: list[str]) -> dict[str, Any]:
    """Audit rows in the server's SQLite database, and the acknowledged (200) calls that have none."""
    import sqlite3

    with sqlite3.connect(data_dir / "cds.sqlite3") as db:
        outcomes = dict(db.execute("SELECT outcome, count(*) FROM cds_call GROUP BY outcome").fetchall())
        ok_rows = db.execute("SELECT hook_instance, latency_ms FROM cds_call WHERE http_status = 200").fetchall()
    audited = {row[0] for row in ok_rows}
    missing = [instance for instance in acknowledged if instance not in audited]
    # latency_ms: from the handler's start to the audit write, as the server measured it
    server_ms = [row[1] for row in ok_rows]
    return {"rows_by_outcome": outcomes, "acknowledged": len(acknowledged),
            "acknowledged_without_row": len(missing), "server_ms_200": _summary(server_ms) if server_ms else {}}


def _level_report(level: int, results: list[tuple[str, float, int, int]], wall: float,
                  hooks: Sequence[str]) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {hook: [] for hook in hooks}
    errors: dict[str, int] = dict.fromkeys(hooks, 0)
    cards: dict[str, int] = dict.fromkeys(hooks, 0)
    statuses: dict[int, int] = {}
    for hook, ms, status, n_cards in results:
        latencies[hook].append(ms)
        statuses[status] = statuses.get(status, 0) + 1
        if status not in (200, 503):  # 503 + Retry-After is the bounded answer, counted as "refused"
            errors[hook] += 1
        cards[hook] += n_cards
    every = [ms for _hook, ms, _status, _cards in results]
    ok = [ms for _hook, ms, status, _cards in results if status == 200]
    return {"clients": level, "requests": len(results), "seconds": wall, "requests_per_s": len(results) / wall,
            "statuses": statuses, "refused": statuses.get(503, 0),
            "ok": _summary(ok) if ok else {"n": 0},
            "all": {**_summary(every), "errors": sum(errors.values())},
            "hooks": {hook: {**_summary(latencies[hook]), "errors": errors[hook],
                             "cards_per_request": cards[hook] / len(latencies[hook])} for hook in hooks}}


def _baseline(bundles: list[dict[str, Any]], hooks: Sequence[str], rulesets: Path | None,
              services: dict[str, Any]) -> dict[str, Any]:
    """The same requests evaluated in-process once each: what the HTTP layer adds is the difference."""
    from cds.engine import Engine

    engine = Engine.load(rulesets)
    out: dict[str, Any] = {}
    for hook in hooks:
        times = []
        for bundle in bundles:
            request = build_requests(bundle, hook, services[hook]["prefetch"])
            started = time.perf_counter()
            engine.evaluate(request, hook=hook)
            times.append((time.perf_counter() - started) * 1000)
        out[hook] = _summary(times)
    return out


def format_levels(report: dict[str, Any]) -> str:
    """One line per client level: requests/s and p50/p95/p99 over every hook."""
    workers = report.get("workers") or "server default"
    lines = [(f"{report['bundles']} Synthea bundles x {len(report['hooks'])} hooks x {report['iterations']} "
              f"iterations per level, engine workers: {workers}"),
             (f"{'clients':>8}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
              f"{'503':>7}")]
    for run in report["levels"]:
        row = run["all"]
        lines.append(f"{run['clients']:>8}{run['requests']:>10}{run['requests_per_s']:>9.1f}{row['p50']:>9.1f}"
                     f"{row['p95']:>9.1f}{row['p99']:>9.1f}{row['errors']:>8}{run.get('refused', 0):>7}")
    return "\n".join(lines) + _format_bounded(report)


def _format_bounded(report: dict[str, Any]) -> str:
    """The bounded-load lines: deadline, 503s, latency of the 200s, audit rows counted."""
    lines = []
    if report.get("queue_deadline_s"):
        run = report["levels"][-1]
        ok = run["ok"]
        lines.append(f"queue deadline {report['queue_deadline_s']:g} s: statuses {run['statuses']}; 200s p50 "
                     f"{ok.get('p50', 0):.0f} ms, p99 {ok.get('p99', 0):.0f} ms, max {ok.get('max', 0):.0f} ms")
    if "audit" in report:
        audit = report["audit"]
        lines.append(f"audit rows by outcome {audit['rows_by_outcome']}; acknowledged (200) calls: "
                     f"{audit['acknowledged']}, without a row: {audit['acknowledged_without_row']}")
    return "".join("\n" + line for line in lines)


def format_report(report: dict[str, Any]) -> str:
    if len(report.get("levels", [])) > 1:
        return format_levels(report)
    lines = [(f"{report['bundles']} Synthea bundles x {report['iterations']} iterations, "
              f"{report['concurrency']} client(s): {report['requests']} requests in {report['seconds']:.1f} s "
              f"= {report['requests_per_s']:.1f} requests/s"),
             (f"{'hook':<14}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean':>9}{'max':>9}{'errors':>8}"
              f"{'engine p50':>12}")]
    for hook, row in report["hooks"].items():
        engine = report.get("engine_only", {}).get(hook, {}).get("p50")
        engine_text = "-" if engine is None else f"{engine:.1f}"
        lines.append(f"{hook:<14}{row['p50']:>9.1f}{row['p95']:>9.1f}{row['p99']:>9.1f}{row['mean']:>9.1f}"
                     f"{row['max']:>9.1f}{row['errors']:>8}{engine_text:>12}")
    return "\n".join(lines) + _format_bounded(report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cds.service.bench_http", description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", type=Path, default=DEFAULT_BUNDLES, help="folder of FHIR R4 Bundles")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--clients", type=_levels, default=None,
                        help="comma-separated client levels run one after the other, e.g. 1,2,4,8")
    parser.add_argument("--workers", type=int, default=None,
                        help="engine worker processes of the server (default: the server's own default)")
    parser.add_argument("--hooks", nargs="+", default=list(SERVICES), choices=list(SERVICES))
    parser.add_argument("--rulesets", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N bundles")
    parser.add_argument("--no-baseline", action="store_true", help="skip the in-process engine timing")
    parser.add_argument("--queue-deadline", type=float, default=None, metavar="S",
                        help="start the server with CDS_QUEUE_DEADLINE_S=S (503 + Retry-After past it)")
    parser.add_argument("--verify-audit", action="store_true",
                        help="count the audit rows afterwards: every 200 must have one")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run_benchmark(bundles_dir=args.bundles, iterations=args.iterations, concurrency=args.concurrency,
                           clients=args.clients, hooks=args.hooks, rulesets=args.rulesets, limit=args.limit,
                           baseline=not args.no_baseline, workers=args.workers,
                           queue_deadline_s=args.queue_deadline, verify_audit=args.verify_audit)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    unaudited = report.get("audit", {}).get("acknowledged_without_row", 0)
    return 1 if unaudited or any(run["all"]["errors"] for run in report["levels"]) else 0


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clients wants numbers separated by commas, e.g. 1,2,4,8 (got {text!r})") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("--clients levels must be 1 or more")
    return levels


if __name__ == "__main__":
    sys.exit(main())
