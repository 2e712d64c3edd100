"""``cds rules schema``: a JSON Schema editors can use, generated from the loader's own models."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cds.cli import cli


def test_rule_schema_is_closed_and_names_the_lifecycle() -> None:
    result = CliRunner().invoke(cli, ["rules", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["additionalProperties"] is False
    assert {"id", "title", "version", "status", "hooks", "source", "evidence", "cards"} <= set(schema["required"])
    assert schema["properties"]["status"]["enum"] == ["draft", "active", "retired"]
    assert schema["$defs"]["ThresholdSpec"]["required"] == ["value", "source"]


def test_tests_schema_and_output_file(tmp_path) -> None:
    target = tmp_path / "tests.schema.json"
    result = CliRunner().invoke(cli, ["rules", "schema", "--kind", "tests", "-o", str(target)])
    assert result.exit_code == 0
    schema = json.loads(target.read_text())
    assert schema["$defs"]["CaseSpec"]["properties"]["expect"]["enum"] == ["fires", "silent"]
