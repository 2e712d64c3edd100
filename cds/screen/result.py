"""What an engine hands back after screening a population: :class:`EngineRun`.

Both engines (``local``: :mod:`cds.screen.local`; ``spark``: ``cds.screen.spark``) return one, and
:mod:`cds.screen.outputs` writes the same files from it, so the outputs cannot drift between engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds.screen.core import WorklistRow, row_sort_key

__all__ = ["EngineRun", "PatientError"]


@dataclass(frozen=True)
class PatientError:
    """A patient the screen could not evaluate, and why (never dropped silently)."""

    patient_id: str
    kind: str  # "input": the patient's data are unusable (names the resource); "engine": our fault
    message: str


@dataclass
class EngineRun:
    """The rows and counts of one screen (see :func:`cds.screen.outputs.write_outputs`).

    ``patients``: distinct patients in the input; ``resources``: every resource read (all types);
    ``selected``: patients stage 1 kept for the full evaluation; ``stages_s``: seconds per stage
    (e.g. ``partition``, ``evaluate``); ``details``: engine-specific facts for summary.json.
    """

    rows: list[WorklistRow]
    patients: int
    resources: int
    selected: int
    errors: list[PatientError] = field(default_factory=list)
    stages_s: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def sorted_rows(self) -> list[WorklistRow]:
        return sorted(self.rows, key=row_sort_key)
