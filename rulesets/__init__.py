"""Marks this folder as the package data ``cds.builtin_rulesets`` (nothing to edit here).

``pyproject.toml``/``setup.py`` map ``rulesets/`` into the installed package under that name, so a
wheel or ``pip install .`` carries the built-in rules, value sets, definitions, labs and growth
reference, and :func:`cds.resources.builtin_rulesets_dir` finds them with ``importlib.resources``
from any folder. Rule authors edit the YAML files only; this file must stay so the folder is a
regular package (a namespace package would not resolve to one folder in an editable install).
"""
