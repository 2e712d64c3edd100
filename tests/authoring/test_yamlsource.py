"""The one YAML loader: libyaml's CSafeLoader, ``file:line`` for every key, duplicate keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cds.rules.yamlsource import LIBYAML, LineLoader, YamlSyntaxError, load_yaml, safe_load

TEXT = """\
id: example
cards:
  - indicator: warning
    summary: first
  - indicator: info
    suggestions:
      - label: refer
        actions: [{create: {resourceType: ServiceRequest}}]
"""


def test_the_c_loader_is_used() -> None:
    assert LIBYAML, "PyYAML without libyaml: every start would parse ~14x slower"
    assert issubclass(LineLoader, yaml.CSafeLoader)


def test_lines_of_keys_list_items_and_nearest_ancestor(tmp_path: Path) -> None:
    path = tmp_path / "rule.yaml"
    path.write_text(TEXT)
    loaded = load_yaml(path)
    assert loaded.data["cards"][1]["suggestions"][0]["label"] == "refer"
    assert loaded.line_of(()) == 1
    assert loaded.line_of(("id",)) == 1
    assert loaded.line_of(("cards",)) == 2
    assert loaded.line_of(("cards", 1)) == 5
    assert loaded.line_of(("cards", 1, "suggestions", 0, "label")) == 7
    assert loaded.line_of(("cards", 1, "suggestions", 0, "actions", 0, "create")) == 8
    assert loaded.line_of(("cards", 0, "no-such-key")) == 3  # the nearest ancestor that exists
    assert loaded.line_of(("cards", 9)) == 2
    assert loaded.where(("cards", 0, "summary")) == f"{path}:4"


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("id: a\nwhen: x\ntitle: t\nwhen: y\n")
    with pytest.raises(YamlSyntaxError) as caught:
        load_yaml(path)
    assert caught.value.line == 4
    assert "duplicate key 'when' (first at line 2)" in str(caught.value)
    assert str(caught.value).startswith(f"{path}:4:")
    with pytest.raises(yaml.YAMLError, match="duplicate key"):
        safe_load("a: 1\na: 2\n")


def test_syntax_errors_and_unreadable_files_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("id: x\ntitle: [unclosed\n")
    with pytest.raises(YamlSyntaxError, match=r"bad.yaml:3: YAML syntax"):
        load_yaml(path)
    path.write_bytes(b"id: \xff\xfe\n")
    with pytest.raises(YamlSyntaxError, match="cannot read the file"):
        load_yaml(path)


def test_safe_types_only() -> None:
    with pytest.raises(yaml.YAMLError):
        safe_load("!!python/object/apply:os.system ['true']\n")
    assert safe_load("") is None
    assert safe_load("when: 2026-01-01\n")["when"].isoformat() == "2026-01-01"


def test_value_sets_and_labs_use_the_same_loader() -> None:
    import cds.facts.labs as labs
    import cds.valuesets as valuesets

    assert valuesets._Loader is LineLoader
    assert labs.safe_load is safe_load
