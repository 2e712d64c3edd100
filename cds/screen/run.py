"""``cds screen`` end to end: load the rules, run an engine, write the outputs and the report.

The engines differ only in how they group and evaluate patients (:mod:`cds.screen.local`, or
``cds.screen.spark`` imported only when asked for, since PySpark is an optional extra); both return a
:class:`cds.screen.result.EngineRun` and everything after that is shared.

Contract for ``cds.screen.spark``: a function ``run_spark(input_path, *, now, ruleset, workers,
master, include_drafts, progress) -> EngineRun`` evaluating every patient with
:func:`cds.screen.core.screen_patient` (or :func:`cds.screen.core.screen_batch`).
"""

from __future__ import annotations

import importlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cds._exceptions import CDSError
from cds.fhir.dates import parse_now
from cds.rules.model import RuleSet
from cds.screen.outputs import write_outputs
from cds.screen.progress import Progress
from cds.screen.result import EngineRun
from cds.workers import default_worker_count

__all__ = ["ENGINES", "run_engine", "screen"]

ENGINES = ("local", "spark")


def run_engine(engine: str, input_path: Path, *, now: datetime, ruleset: RuleSet, workers: int | None,
               master: str | None = None, include_drafts: bool = False, progress: Progress | None = None) -> EngineRun:
    """Screen with the named engine (no outputs written): for ``cds screen`` and ``cds rules impact``."""
    if engine == "local":
        from cds.screen.local import run_local

        return run_local(input_path, now=now, ruleset=ruleset, workers=workers, include_drafts=include_drafts,
                         progress=progress)
    if engine == "spark":
        try:
            spark = importlib.import_module("cds.screen.spark")
        except ModuleNotFoundError as exc:
            if exc.name == "cds.screen.spark":
                raise CDSError("the Spark engine (cds.screen.spark) is not part of this installation") from None
            if exc.name and exc.name.split(".")[0] in ("pyspark", "py4j"):
                raise CDSError("--engine spark needs PySpark: pip install 'sir-cds[spark]'") from None
            raise
        result: EngineRun = spark.run_spark(input_path, now=now, ruleset=ruleset, workers=workers, master=master,
                                            include_drafts=include_drafts, progress=progress)
        return result
    raise CDSError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")


def screen(input_path: Path, out_dir: Path, *, now: datetime | str | None = None, rulesets: Path | None = None,
           ruleset: RuleSet | None = None, engine: str = "local", workers: int | None = None,
           master: str | None = None, include_drafts: bool = False, progress: Progress | None = None,
           report: bool = True) -> dict[str, Any]:
    """Screen INPUT into ``out_dir`` (worklist.csv/.parquet, summary.json, report.html); the summary.

    ``elapsed_s`` in the summary runs from loading the rules to the end of the evaluation (the
    figure patients/s and resources/s are computed from); writing the report is timed apart.
    """
    from cds.rules.loader import load_ruleset

    started = time.perf_counter()
    instant = parse_now(now)
    loaded = ruleset if ruleset is not None else load_ruleset(rulesets, use_cache=True)
    size = workers or default_worker_count()
    run = run_engine(engine, input_path, now=instant, ruleset=loaded, workers=size, master=master,
                     include_drafts=include_drafts, progress=progress)
    elapsed = time.perf_counter() - started
    from cds.engine import active_rules

    versions = {rule.spec.id: rule.spec.version for rule in active_rules(loaded, include_drafts)}
    summary = write_outputs(out_dir, run, engine=engine, workers=size, ruleset_digest=loaded.digest,
                            now=instant.isoformat(), elapsed_s=elapsed, rule_versions=versions)
    if report:
        from cds.screen.report import write_report

        t_report = time.perf_counter()
        write_report(out_dir, run.sorted_rows(), summary, loaded)
        summary["stages_s"]["report"] = round(time.perf_counter() - t_report, 3)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
    return summary
