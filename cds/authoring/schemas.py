"""JSON Schema of the rule, definitions and test file formats, for editors (``cds rules schema``).

Why export: with ``# yaml-language-server: $schema=rule.schema.json`` at the top of a rule file (or a
VS Code ``yaml.schemas`` mapping), the editor completes keys and flags unknown fields while the
informatician types, before ``cds rules validate`` runs. The schema is generated from the same
pydantic models the loader uses, so it cannot drift from what is accepted.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cds.authoring.testfile import TestFileSpec
from cds.rules.schema import DefinitionsFile, RuleSpec

__all__ = ["KINDS", "json_schema"]

KINDS: dict[str, tuple[type[BaseModel], str]] = {
    "rule": (RuleSpec, "SIR CDS rule file (rulesets/rules/<id>.yaml)"),
    "definitions": (DefinitionsFile, "SIR CDS shared definitions (rulesets/definitions.yaml)"),
    "tests": (TestFileSpec, "SIR CDS rule tests (rulesets/rules/<id>.test.yaml)"),
}


def json_schema(kind: str = "rule") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one file kind: ``rule``, ``definitions`` or ``tests``."""
    model, title = KINDS[kind]
    schema = model.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://sir-cds.org/schema/{kind}.schema.json", **schema, "title": title}
