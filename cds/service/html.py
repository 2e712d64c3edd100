"""The Jinja environment of the service's HTML pages (the why page, the governance dashboard).

Autoescaped, strict (a missing name is an error, never an empty cell), templates in
``cds/service/templates`` (shipped as package data). Built on first use: the CDS Hooks calls never
need it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["TEMPLATES", "environment"]

TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
