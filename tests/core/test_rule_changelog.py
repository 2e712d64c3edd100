"""Rule versions and changelogs (issue 8: "version every changed rule, with its changelog line").

Every rule past 1.0.0 carries a ``changelog`` whose top entry is its current version, and the
entries run newest first with strictly decreasing versions, so a card's ``source.topic.version``
always has a line saying what changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

RULES = sorted(p for p in (Path(__file__).resolve().parents[2] / "rulesets" / "rules").glob("*.yaml")
               if not p.name.endswith(".test.yaml"))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in str(text).split("."))


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_changelog_top_entry_is_the_version(path: Path) -> None:
    rule = yaml.safe_load(path.read_text(encoding="utf-8"))
    changelog = rule.get("changelog") or []
    if _version(rule["version"]) > (1, 0, 0):
        assert changelog, f"{path.name}: version {rule['version']} with no changelog"
    if changelog:
        assert str(changelog[0]["version"]) == str(rule["version"]), path.name
        versions = [_version(entry["version"]) for entry in changelog]
        assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions), path.name
        assert all(str(entry.get("change", "")).strip() for entry in changelog), path.name


def test_there_are_nineteen_rules() -> None:
    assert len(RULES) == 19
