"""Time ``cds serve`` from launch to its first 200 on ``GET /cds-services``, cold and warm.

Why a script and not a test: start-up time depends on the machine and its load; this measures, it does
not assert. Cold = a first start: an empty ``CDS_CACHE_DIR`` (the ruleset check process validates the
rules and runs every rule test) and a new database folder (migrated from scratch); warm = a restart: the
same cache folder (the gate's cached pass skips the check process) and the same database. Each run gets
a free port; the server's output goes to a file (never a pipe that could fill up), and the server is
stopped with SIGINT, then SIGKILL if it does not stop.

    python tests/tools/serve_start.py --runs 5            # cold and warm, medians
    python tests/tools/serve_start.py --runs 3 --mode cold --cds .venv/bin/cds
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["main", "time_start"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def time_start(cds: str, cache_dir: Path, data_dir: Path, *, timeout_s: float = 120.0,
               extra_env: dict[str, str] | None = None) -> float:
    """Seconds from launching ``cds serve`` to the first 200 on discovery (RuntimeError if it never answers)."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="serve-start-log-") as log_dir:
        env = {**os.environ, "CDS_CACHE_DIR": str(cache_dir), "CDS_DATA_DIR": str(data_dir), **(extra_env or {})}
        env.pop("CDS_DATABASE_URL", None)
        log_path = Path(log_dir) / "serve.log"
        url = f"http://127.0.0.1:{port}/cds-services"
        with log_path.open("wb") as log:
            started = time.perf_counter()
            process = subprocess.Popen([cds, "serve", "--port", str(port), "--log-level", "warning"],
                                       stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                while time.perf_counter() - started < timeout_s:
                    if process.poll() is not None:
                        raise RuntimeError(f"cds serve exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
                    try:
                        with urllib.request.urlopen(url, timeout=2) as response:
                            if response.status == 200:
                                return time.perf_counter() - started
                    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                        pass
                    time.sleep(0.05)
                raise RuntimeError(f"no 200 from {url} within {timeout_s:g} s:\n{log_path.read_text()[-2000:]}")
            finally:
                _stop(process)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per mode (default 5)")
    parser.add_argument("--mode", choices=["cold", "warm", "both"], default="both")
    parser.add_argument("--cds", default=str(Path(sys.executable).with_name("cds")), help="the cds executable")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each start")
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="serve-start-warm-") as warm:
        warm_cache, warm_data = Path(warm) / "cache", Path(warm) / "data"
        if args.mode in ("warm", "both"):
            time_start(args.cds, warm_cache, warm_data, timeout_s=args.timeout)  # fills cache and database: not counted
        for run in range(args.runs):
            for mode in ("cold", "warm"):
                if args.mode not in (mode, "both"):
                    continue
                if mode == "cold":
                    with tempfile.TemporaryDirectory(prefix="serve-start-cold-") as cold:
                        seconds = time_start(args.cds, Path(cold) / "cache", Path(cold) / "data",
                                             timeout_s=args.timeout)
                else:
                    seconds = time_start(args.cds, warm_cache, warm_data, timeout_s=args.timeout)
                results.setdefault(mode, []).append(seconds)
                print(f"{mode} run {run + 1}: {seconds:.2f} s (load average {_load()})", flush=True)
    for mode, values in results.items():
        print(f"{mode}: median {statistics.median(values):.2f} s over {len(values)} runs "
              f"(min {min(values):.2f}, max {max(values):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
