"""The built-in rulesets ship as package data and are found with importlib.resources.

The real proof is ``.ci/run``: it builds a wheel, installs it into a fresh venv and evaluates a sample
from another folder. These fast checks catch the usual way that breaks: a new kind of data file in
``rulesets/`` (or a new sub-folder) that the package-data globs do not carry into the wheel.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.resources
import tomllib
from pathlib import Path

from cds.resources import BUILTIN_RULESETS_PACKAGE, builtin_rulesets_dir

ROOT = Path(__file__).resolve().parents[1]
RULESETS = ROOT / "rulesets"


def _setup_packages() -> set[str]:
    """The packages setup.py adds for rulesets/ (read with ast: running setup.py would build)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    data_dirs: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_DATA_DIRS" for t in node.targets):
            data_dirs = ast.literal_eval(node.value)
    return {BUILTIN_RULESETS_PACKAGE, *(f"{BUILTIN_RULESETS_PACKAGE}.{d}" for d in data_dirs)}


def test_builtin_rulesets_resolve_through_importlib_resources() -> None:
    folder = builtin_rulesets_dir()
    assert folder == Path(str(importlib.resources.files(BUILTIN_RULESETS_PACKAGE)))
    assert folder.resolve() == RULESETS.resolve()  # editable install: the checkout's folder itself
    for part in ("definitions.yaml", "labs.yaml", "rules", "valuesets/vsac", "reference/bmi_for_age_lms.csv"):
        assert (folder / part).exists(), part


def test_every_data_file_of_rulesets_is_declared_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]
    packages = _setup_packages()
    missing = []
    for path in sorted(RULESETS.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".py", ".pyc"):
            continue
        relative = path.relative_to(RULESETS)
        package = ".".join([BUILTIN_RULESETS_PACKAGE, *relative.parent.parts])
        patterns = package_data.get("*", []) + package_data.get(package, [])
        if package not in packages or not any(fnmatch.fnmatch(path.name, p) for p in patterns):
            missing.append(str(relative))
    assert not missing, f"not shipped in the wheel (add to setup.py _DATA_DIRS / package-data): {missing}"
