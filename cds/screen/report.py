"""report.html (placeholder until the charts land)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cds.rules.model import RuleSet
from cds.screen.core import WorklistRow

__all__ = ["write_report"]


def write_report(out_dir: Path, rows: list[WorklistRow], summary: dict[str, Any], ruleset: RuleSet) -> Path:
    path = out_dir / "report.html"
    path.write_text("<!doctype html><title>screen</title>", encoding="utf-8")
    return path
