"""Engine benchmark over a folder of FHIR Bundles (default: the 40 Synthea patients in ../shared).

Reports what the engine issue asks for: p50/p95/p99 latency of one patient evaluation, patients per
second on one core, peak memory (max RSS), and the ratio of evaluation time to ``json.loads`` time
for the same file. It is a benchmark, not a test: it asserts nothing and is run by hand
(``cds bench``) before and after work on hot paths.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from cds.engine import Engine

__all__ = ["BenchReport", "default_bundle_dir", "percentile", "run_bench"]


def default_bundle_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea-r4"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class BenchReport:
    files: int
    evaluations: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    patients_per_second: float
    peak_rss_mb: float
    ratio_median: float
    ratio_total: float
    cards: int
    errors: list[str]

    def lines(self) -> list[str]:
        return [
            (f"files: {self.files}, evaluations: {self.evaluations}, cards returned: {self.cards}, "
             f"errors: {len(self.errors)}"),
            (f"latency per patient evaluation (ms): p50 {self.p50_ms:.2f}  p95 {self.p95_ms:.2f}  "
             f"p99 {self.p99_ms:.2f}  mean {self.mean_ms:.2f}"),
            f"throughput (one core, serial): {self.patients_per_second:.1f} patients/s",
            f"peak memory (max RSS): {self.peak_rss_mb:.1f} MB",
            f"evaluation time / json.loads time: median {self.ratio_median:.2f}, total {self.ratio_total:.2f}",
        ] + [f"error: {e}" for e in self.errors]


def run_bench(
    bundle_dir: Path, *, rounds: int = 5, now: str = "2026-11-01T00:00:00Z", engine: Engine | None = None
) -> BenchReport:
    """Evaluate every ``*.json`` in ``bundle_dir`` ``rounds`` times; timings exclude file I/O."""
    engine = engine or Engine.load()
    files = sorted(p for p in bundle_dir.glob("*.json"))
    texts = {p: p.read_bytes() for p in files}
    latencies: list[float] = []
    ratios: list[float] = []
    total_eval = total_loads = 0.0
    cards = 0
    errors: list[str] = []
    for path in files:  # warm-up: imports, model caches
        try:
            engine.evaluate(json.loads(texts[path]), now=now)
        except Exception as exc:  # noqa: BLE001 - reported, not raised: a benchmark keeps going
            errors.append(f"{path.name}: {type(exc).__name__}: {exc}")
        break
    for _round in range(rounds):
        for path in files:
            start = time.perf_counter()
            payload = json.loads(texts[path])
            loaded = time.perf_counter()
            try:
                result = engine.evaluate(payload, now=now)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{path.name}: {type(exc).__name__}: {exc}")
                continue
            done = time.perf_counter()
            evaluation, loads = done - loaded, loaded - start
            latencies.append(evaluation * 1000)
            ratios.append(evaluation / loads if loads > 0 else float("inf"))
            total_eval += evaluation
            total_loads += loads
            cards += len(result.cards)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return BenchReport(
        files=len(files), evaluations=len(latencies),
        p50_ms=percentile(latencies, 50) if latencies else 0.0,
        p95_ms=percentile(latencies, 95) if latencies else 0.0,
        p99_ms=percentile(latencies, 99) if latencies else 0.0,
        mean_ms=statistics.fmean(latencies) if latencies else 0.0,
        patients_per_second=len(latencies) / total_eval if total_eval else 0.0,
        peak_rss_mb=peak, ratio_median=statistics.median(ratios) if ratios else 0.0,
        ratio_total=total_eval / total_loads if total_loads else 0.0,
        cards=cards // max(rounds, 1), errors=errors,
    )
