"""``cds rules catalog``: the sign-off document says what the engine runs."""

from __future__ import annotations

import json
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
    appendix = (out / "valuesets.md").read_text()
    templates = (out / "templates.md").read_text()
    assert "| [metformin-renal](#rule-metformin-renal) | Metformin and reduced kidney function | 1.1.1 | active |" in md
    assert "## metformin-renal: Metformin and reduced kidney function" in md
    assert "### Card 1: critical (order-select, order-sign)" in md
    # plain-English conditions with thresholds in plain units, as converted by the engine
    assert "**< metformin_egfr_start (45 mL/min/1.73 m2)** (`egfr`)" in md
    assert "| `metformin_egfr_stop` | 30 | mL/min/1.73 m2 | FDA Drug Safety Communication" in md
    assert "{1.73_m2}" not in md
    # a rendered example card from the rule's own tests, not the template
    assert "(test case: drafted metformin with eGFR 25 is critical (remove the order); order-sign)" in md
    assert "**Summary:** eGFR 25 mL/min/1.73 m2 (2026-10-01): metformin is contraindicated - remove the order" in md
    assert "- **eGFR 25 mL/min/1.73 m2 on 2026-10-01**." in md
    assert "{{" not in md  # no raw Jinja in the catalogue: templates are in their appendix
    assert "eGFR {{ lab.egfr.shown|num }} mL/min/1.73 m2" in templates and '<a id="tpl-metformin-renal-0"></a>' in templates
    # only the thresholds and value sets the rule uses; the codes are in the appendix
    renal = md[md.index('<a id="rule-metformin-renal">'):md.index('<a id="rule-sir-suspected">')]
    assert "`metformin_egfr_start`" in renal and "`lean_bmi`" not in renal and "`severe_fasting_insulin`" not in renal
    assert "[metformin](valuesets.md#vs-metformin)" in renal and "fasting-insulin" not in renal
    assert "**RXNORM (" not in md and "<a id=\"vs-metformin\"></a>" in appendix and "**RXNORM (" in appendix
    # approval block and source attributes
    assert "| Approved by | Approved on | Next review |" in renal
    assert "| (11) Date of birth | Not used:" in renal and "| (1) Bibliographic citation |" in renal
    assert "| Known limitations |" in renal and "| Intended user |" in renal
    assert "(http://www.fda.gov/Drugs/DrugSafety/ucm493244.htm)" in md
    assert "30 cases (16 fires, 14 silent) in `metformin-renal.test.yaml`" in md
    assert "delete each drafted order of [metformin](valuesets.md#vs-metformin)" in md
    # HTML: the same content, well nested; its links point at the HTML appendix
    assert '<h2 id="rule-metformin-renal">' in page and 'href="valuesets.html#vs-metformin"' in page
    for name in ("catalog.html", "valuesets.html", "templates.html"):
        checker = _Balance()
        checker.feed((out / name).read_text())
        assert checker.errors == [] and checker.stack == [], name
    # JSON export: the same facts, computable
    data = json.loads((out / "catalog.json").read_text())
    rule = next(r for r in data["rules"] if r["id"] == "metformin-renal")
    assert rule["source_attributes"]["uses"]["race"] == {"used": False, "how": "Not read by the rule or its cards."}
    assert rule["fda_criterion_4"]["inputs"] and rule["approval"]["next_review"] == "2027-06-01"
    assert rule["thresholds"]["metformin_egfr_stop"]["unit"] == "mL/min/1.73 m2"
    assert "lean_bmi" not in rule["thresholds"] and "metformin" in rule["valuesets"]
    assert len(rule["examples"]) >= 5 and all("{{" not in e["detail"] for e in rule["examples"])


def test_catalog_size(tmp_path: Path) -> None:
    """The shipped rules' catalogue: readable size, every card with a rendered example where a test shows it."""
    out = tmp_path / "build"
    result = CliRunner().invoke(cli, ["rules", "catalog", "-o", str(out)])
    assert result.exit_code == 0, result.output
    size = len((out / "catalog.md").read_bytes())
    print(f"\n{result.output.strip()}")
    assert size < 450_000  # the old catalogue on these rules: 545 KB, code lists and raw templates inline
    data = json.loads((out / "catalog.json").read_text())
    assert len(data["rules"]) >= 19 and all(r["examples"] for r in data["rules"])


def test_catalog_changes_with_the_threshold(make_ruleset) -> None:
    directory = make_ruleset("metformin-renal")
    before = CliRunner().invoke(cli, ["rules", "catalog", str(directory)]).output
    definitions = directory / "definitions.yaml"
    definitions.write_text(definitions.read_text().replace("metformin_egfr_stop:\n    value: 30",
                                                           "metformin_egfr_stop:\n    value: 35"))
    after = CliRunner().invoke(cli, ["rules", "catalog", str(directory)]).output
    assert "egfr_stop (30 mL/min/1.73 m2)" in before and "egfr_stop (35 mL/min/1.73 m2)" in after
    assert "egfr_stop (30 mL/min/1.73 m2)" not in after


def test_catalog_refuses_an_invalid_ruleset(make_ruleset) -> None:
    directory = make_ruleset("metformin-renal")
    (directory / "rules" / "bad.yaml").write_text("id: bad\n")
    result = CliRunner().invoke(cli, ["rules", "catalog", str(directory)])
    assert result.exit_code == 1
