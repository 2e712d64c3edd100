"""Benchmark ``cds screen`` on generated populations (a command, not a timed test).

For each size (default 10,000 and 100,000 patients) it generates the population once
(``cds population generate``, cached in ``--work``), then runs ``cds screen`` as a separate process
with each configuration (local with 1 and 2 workers, Spark ``local[2]``), and reports the way Blaze
reports CQL: patients, resources, cores, RAM, seconds, plus patients/s, resources/s, the summed peak
RSS of the process tree (screen process, engine workers, Spark JVM and Python workers: sampled from
/proc every 0.2 s) and the time per stage from summary.json. It also checks that the Spark worklist
is identical to the local one and reports sensitivity, specificity and PPV of the screen against the
generator's labels (:mod:`cds.population.accuracy`).

Figures depend on the machine and its load: say whether it was shared when quoting them.

    .venv/bin/python tests/tools/bench_screen.py --sizes 10000 --work /tmp/bench --out bench.md
    .venv/bin/python tests/tools/bench_screen.py --sizes 10000,100000 --configs local1,local2,spark2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cds.population.accuracy import SCREENED_PATHWAYS, accuracy_from_files  # noqa: E402

NOW = "2026-11-01T09:00:00Z"
CONFIGS = {
    "local1": ["--engine", "local", "--workers", "1"],
    "local2": ["--engine", "local", "--workers", "2"],
    "spark2": ["--engine", "spark", "--master", "local[2]"],
}
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> int:
    """Bytes of resident memory of ``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * _PAGE
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def _run(cmd: list[str], log: Path) -> tuple[float, int, int]:
    """(wall seconds, peak summed RSS of the tree, exit code); output to ``log``."""
    peak = 0
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss(process.pid))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    return wall, peak, code


def _population(work: Path, size: int, seed: int) -> tuple[Path, float]:
    folder = work / f"pop-{size}-s{seed}"
    if (folder / "manifest.json").exists():
        return folder, 0.0
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cds", "population", "generate", "--patients", str(size), "--seed",
                    str(seed), "--out", str(folder)], check=True, cwd=REPO)
    return folder, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--configs", default="local1,local2,spark2")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cds-bench-screen"))
    parser.add_argument("--out", type=Path, default=None, help="Markdown report (also written as .json)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    cores = os.cpu_count()
    ram_gb = round(os.sysconf("SC_PHYS_PAGES") * _PAGE / 2**30, 1)
    for size in (int(s) for s in args.sizes.split(",")):
        population, gen_s = _population(args.work, size, args.seed)
        reference: bytes | None = None
        for name in args.configs.split(","):
            out = args.work / f"screen-{size}-{name}"
            cmd = [sys.executable, "-m", "cds", "screen", str(population / "manifest.json"), "--out", str(out),
                   "--now", NOW, "--no-report", *CONFIGS[name]]
            wall, peak, code = _run(cmd, args.work / f"screen-{size}-{name}.log")
            row: dict[str, Any] = {"size": size, "config": name, "wall_s": round(wall, 1), "peak_rss_mb":
                                   round(peak / 2**20), "exit": code, "generate_s": round(gen_s, 1)}
            if code == 0:
                summary = json.loads((out / "summary.json").read_text())
                worklist = (out / "worklist.csv").read_bytes()
                if reference is None:
                    reference = worklist
                row.update({
                    "patients": summary["patients"], "resources": summary["resources"], "cards": summary["cards"],
                    "screen_elapsed_s": summary["elapsed_s"],
                    "patients_per_s_wall": round(summary["patients"] / wall), "resources_per_s_wall":
                    round(summary["resources"] / wall), "stages_s": summary.get("stages_s"),
                    "evaluated": summary.get("patients_evaluated"), "errors": summary.get("patients_with_errors"),
                    "same_worklist_as_first": worklist == reference,
                    "accuracy": accuracy_from_files(population / "labels.csv", out / "worklist.csv"),
                })
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "accuracy"}), flush=True)
    lines = [f"Machine: {cores} cores, {ram_gb} GB RAM; --now {NOW}; wall = whole `cds screen` process",
             "(start-up, rules, read, evaluate, write; no report.html); peak RSS summed over the process tree.", "",
             ("| patients | resources | engine | cores used | peak RSS MB | seconds | patients/s | resources/s "
             "| stages (s) | cards | worklist = first config |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results:
        if row["exit"] != 0:
            lines.append(f"| {row['size']} | | {row['config']} | | | failed (exit {row['exit']}) | | | | | |")
            continue
        stages = ", ".join(f"{k} {v}" for k, v in (row["stages_s"] or {}).items())
        used = {"local1": 1, "local2": 2, "spark2": 2}.get(row["config"], "?")
        lines.append(f"| {row['patients']} | {row['resources']} | {row['config']} | {used} | {row['peak_rss_mb']} | "
                     f"{row['wall_s']} | {row['patients_per_s_wall']} | {row['resources_per_s_wall']} | {stages} | "
                     f"{row['cards']} | {'yes' if row['same_worklist_as_first'] else 'NO'} |")
    lines += ["", "Screen against the generator's labels (planted patients = positives):", "",
              "| patients | pathway | planted | carded | TP | FP | FN | sensitivity | specificity | PPV |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results:
        if row["exit"] == 0 and row["config"] == args.configs.split(",")[0]:
            for pathway in SCREENED_PATHWAYS:
                a = row["accuracy"][pathway]
                lines.append(f"| {row['patients']} | {pathway} | {a['planted']} | {a['carded']} | {a['tp']} | "
                             f"{a['fp']} | {a['fn']} | {a['sensitivity']} | {a['specificity']} | {a['ppv']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
