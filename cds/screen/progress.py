"""Progress reporting for long screens, decoupled from the terminal (the CLI draws the bar)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullProgress", "Progress"]


class Progress(Protocol):
    """A stage starts with a total (bytes read, patients evaluated), advances, and ends."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, amount: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Says nothing (not a terminal, tests)."""

    def start(self, label: str, total: int) -> None:
        return None

    def advance(self, amount: int) -> None:
        return None

    def finish(self) -> None:
        return None
