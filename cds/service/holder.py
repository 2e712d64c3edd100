"""The loaded engine and its service catalogue, swappable atomically.

Requests call :meth:`EngineHolder.current` once and use that snapshot to the end, so a later
safe-reload (issue 5) can :meth:`swap` in a new engine while in-flight requests finish on the old.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from cds.service.catalog import ServiceDefinition, build_catalog

__all__ = ["EngineHolder", "LoadedEngine"]


@dataclass(frozen=True)
class LoadedEngine:
    """One engine and the discovery catalogue built from its rulesets."""

    engine: Any  # cds.engine.Engine (typed loosely so tests can hold a failing stand-in)
    catalog: dict[str, ServiceDefinition]

    @property
    def digest(self) -> str:
        return self.engine.digest


class EngineHolder:
    """Holds the current :class:`LoadedEngine`; reads are lock-free, swaps are serialised."""

    def __init__(self, engine: Any) -> None:
        self._lock = threading.Lock()
        self._current = LoadedEngine(engine, build_catalog(engine))

    def current(self) -> LoadedEngine:
        return self._current

    def swap(self, engine: Any) -> LoadedEngine:
        """Install ``engine`` (already loaded and validated); returns the previous one."""
        loaded = LoadedEngine(engine, build_catalog(engine))
        with self._lock:
            previous, self._current = self._current, loaded
        return previous
