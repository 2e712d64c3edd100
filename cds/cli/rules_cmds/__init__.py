"""Subcommands of ``cds rules``, one module each (``command`` attribute), hatch style."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["rulesets_argument"]


def rulesets_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    """The optional DIR argument every subcommand shares (default: the built-in rulesets/)."""
    return click.argument("directory", required=False, metavar="[DIR]",
                          type=click.Path(path_type=Path, file_okay=False, exists=True))(func)


def display_path(path: str | Path) -> str:
    """Paths relative to the working directory when possible: shorter, and clickable in editors."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
