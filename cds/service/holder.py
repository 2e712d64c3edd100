"""The loaded engine and its service catalogue, swappable atomically, with safe reload.

Requests call :meth:`EngineHolder.current` once and use that snapshot to the end, so a reload can
:meth:`swap` in a new engine while in-flight requests finish on the old. :meth:`reload` is the
service side of issue 5's safe reload: the candidate rulesets must validate, compile and pass their
own rule tests (:func:`cds.authoring.reload.safe_reload`) before they are swapped in; otherwise the
old rules keep serving and the result says why.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds.service.catalog import ServiceDefinition, build_catalog

__all__ = ["EngineHolder", "LoadedEngine"]

log = logging.getLogger("cds.service.reload")


@dataclass(frozen=True)
class LoadedEngine:
    """One engine and the discovery catalogue built from its rulesets."""

    engine: Any  # cds.engine.Engine (typed loosely so tests can hold a failing stand-in)
    catalog: dict[str, ServiceDefinition]

    @property
    def digest(self) -> str:
        return self.engine.digest


class EngineHolder:
    """Holds the current :class:`LoadedEngine`; reads are lock-free, swaps and reloads are serialised."""

    def __init__(self, engine: Any, *, directory: Path | None = None, run_rule_tests: bool = True) -> None:
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._current = LoadedEngine(engine, build_catalog(engine))
        ruleset = getattr(engine, "ruleset", None)
        self.directory = Path(directory or getattr(ruleset, "directory", "."))
        self.include_drafts = bool(getattr(engine, "include_drafts", False))
        self.run_rule_tests = run_rule_tests
        self.last_result: Any = None

    def current(self) -> LoadedEngine:
        return self._current

    def swap(self, engine: Any) -> LoadedEngine:
        """Install ``engine`` (already loaded and validated); returns the previous one."""
        loaded = LoadedEngine(engine, build_catalog(engine))
        with self._lock:
            previous, self._current = self._current, loaded
        return previous

    def reload(self, directory: Path | None = None) -> Any:
        """Validate, compile and test the rulesets; swap only if all is well (a ReloadResult)."""
        from cds.authoring.reload import safe_reload

        with self._reload_lock:
            target = Path(directory or self.directory)
            result = safe_reload(self.swap, target, include_drafts=self.include_drafts,
                                 current_digest=self._current.digest, run_rule_tests=self.run_rule_tests)
            if result.ok and result.changed:
                self.directory = target
            self.last_result = result
            return result
