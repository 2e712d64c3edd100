"""Where the built-in data lives once installed: the rulesets shipped as package data.

The top-level ``rulesets/`` folder of the repository is mapped into the package as
``cds.builtin_rulesets`` (``setup.py``), so one lookup works for a source checkout with an editable
install, a wheel, ``pip install .`` and a container alike; nothing is located through
``Path(__file__).parents[...]``, which breaks as soon as the package is installed anywhere else.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from cds._exceptions import RulesetError

__all__ = ["BUILTIN_RULESETS_PACKAGE", "builtin_rulesets_dir"]

BUILTIN_RULESETS_PACKAGE = "cds.builtin_rulesets"


def builtin_rulesets_dir() -> Path:
    """The built-in rulesets folder (rules, value sets, definitions, labs, growth reference)."""
    try:
        root = importlib.resources.files(BUILTIN_RULESETS_PACKAGE)
    except ModuleNotFoundError:
        raise RulesetError(
            f"the built-in rulesets ({BUILTIN_RULESETS_PACKAGE}) are not installed: reinstall the package "
            "(pip install sir-cds, or pip install -e . in a checkout) or pass --rulesets DIR") from None
    if not isinstance(root, Path):  # e.g. imported from a zip file: the loaders need a real folder
        raise RulesetError(f"the built-in rulesets are inside {root}, not a folder on disk: install the "
                           "package unzipped or pass --rulesets DIR")
    return root
