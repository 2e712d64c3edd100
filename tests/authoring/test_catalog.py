"""``cds rules catalog``: the sign-off document says what the engine runs."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from cds.cli import cli


class _Balance(HTMLParser):
    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:  # type: ignore[no-untyped-def]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_catalog_contents(make_ruleset, tmp_path: Path) -> None:
    directory = make_ruleset("metformin-renal", "sir-suspected")
    out = tmp_path / "build"
    result = CliRunner().invoke(cli, ["rules", "catalog", str(directory), "-o", str(out)])
    assert result.exit_code == 0, result.output
    md = (out / "catalog.md").read_text()
    page = (out / "catalog.html").read_text()
    assert "| [metformin-renal](#rule-metformin-renal) | Metformin and reduced kidney function | 1.1.0 | active |" in md
    assert "## metformin-renal: Metformin and reduced kidney function" in md
    assert "### Card 1: critical (order-select, order-sign)" in md
    # plain-English conditions with thresholds and units, as converted by the engine
    assert "**< metformin_egfr_start (45 mL/min/{1.73_m2})** (`egfr`)" in md
    assert "| `metformin_egfr_stop` | 30 | mL/min/{1.73_m2} | FDA Drug Safety Communication" in md
    # value sets with their codes, card text, evidence links, test counts
    assert '<a id="vs-metformin"></a>' in md and "861007" in md
    assert "**Summary: **" not in md and "eGFR {{ lab.egfr.shown|num }} mL/min/1.73 m2" in md
    assert "(http://www.fda.gov/Drugs/DrugSafety/ucm493244.htm)" in md
    assert "30 cases (16 fires, 14 silent) in `metformin-renal.test.yaml`" in md
    assert "delete each drafted order of [metformin](#vs-metformin)" in md
    # HTML: the same content, well nested
    assert '<h2 id="rule-metformin-renal">' in page and "861007" in page
    checker = _Balance()
    checker.feed(page)
    assert checker.errors == [] and checker.stack == []


def test_catalog_changes_with_the_threshold(make_ruleset) -> None:
    directory = make_ruleset("metformin-renal")
    before = CliRunner().invoke(cli, ["rules", "catalog", str(directory)]).output
    definitions = directory / "definitions.yaml"
    definitions.write_text(definitions.read_text().replace("metformin_egfr_stop:\n    value: 30",
                                                           "metformin_egfr_stop:\n    value: 35"))
    after = CliRunner().invoke(cli, ["rules", "catalog", str(directory)]).output
    assert "egfr_stop (30 mL/min/{1.73_m2})" in before and "egfr_stop (35 mL/min/{1.73_m2})" in after
    assert "egfr_stop (30 mL/min/{1.73_m2})" not in after


def test_catalog_refuses_an_invalid_ruleset(make_ruleset) -> None:
    directory = make_ruleset("metformin-renal")
    (directory / "rules" / "bad.yaml").write_text("id: bad\n")
    result = CliRunner().invoke(cli, ["rules", "catalog", str(directory)])
    assert result.exit_code == 1
