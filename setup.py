"""Package layout only (metadata, dependencies and tool settings are in pyproject.toml).

Why a setup.py: the built-in rulesets stay in the top-level ``rulesets/`` folder (the authoring
layout), yet must ship inside the package as ``cds.builtin_rulesets`` so an installed wheel finds
them with ``importlib.resources``. pyproject.toml can either *find* packages or *list* them, not
both; here ``cds`` and every subpackage are found (a new ``cds/...`` package is never left out of
the wheel) and the mapped ``rulesets/`` folder is added.
"""

from setuptools import find_packages, setup

_DATA_DIRS = ["rules", "valuesets", "valuesets.vsac", "reference"]

setup(
    packages=[*find_packages(include=["cds", "cds.*"]), "cds.builtin_rulesets",
              *(f"cds.builtin_rulesets.{name}" for name in _DATA_DIRS)],
    package_dir={"cds.builtin_rulesets": "rulesets"},
)
