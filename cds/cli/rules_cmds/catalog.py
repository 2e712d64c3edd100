"""``cds rules catalog [DIR]``: the catalogue of every rule for sign-off (Markdown, HTML, JSON) and its
value-set appendix."""

from __future__ import annotations

from pathlib import Path

import click

from cds._exceptions import RulesetError
from cds.cli.rules_cmds import rulesets_argument

__all__ = ["command"]


@click.command(name="catalog")
@rulesets_argument
@click.option("-o", "--output", "output", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write catalog.md/.html/.json and the appendices valuesets.md/.html, templates.md/.html into this folder "
                   "(created if needed). Example: -o build/")
@click.option("--format", "fmt", type=click.Choice(["markdown", "html", "json"]), default="markdown",
              show_default=True, help="Without --output: which format to print on stdout.")
def command(directory: Path | None, output: Path | None, fmt: str) -> None:
    """Generate the rule catalogue: per rule its version, status, approval, conditions with thresholds
    in plain units, an example of each card rendered from the rule's own test cases, the thresholds,
    value sets and definitions it uses, evidence, limitations, HTI-1 source attributes and the FDA
    criterion-4 basis. The full value-set code lists and the card templates go to appendices (valuesets.md, templates.md).

    The rulesets must validate first (the catalogue documents what the service would run).
    """
    import json

    from cds.authoring.catalog import (
        build_catalog,
        build_template_appendix,
        build_valueset_appendix,
        catalog_json,
        example_cards,
        render_html,
        render_markdown,
    )
    from cds.authoring.gate import load_validated
    from cds.engine import Engine

    try:
        ruleset = load_validated(directory)
    except RulesetError as exc:
        click.echo(f"cannot build the catalogue: {exc}", err=True)
        raise SystemExit(1) from None
    engine = Engine(ruleset, include_drafts=True)
    examples = {rule.spec.id: example_cards(ruleset, rule, engine) for rule in ruleset.rules}
    blocks = build_catalog(ruleset, examples)
    as_json = json.dumps(catalog_json(ruleset, examples), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        text = {"markdown": render_markdown(blocks), "html": render_html(blocks), "json": as_json}[fmt]
        click.echo(text, nl=False)
        return
    output.mkdir(parents=True, exist_ok=True)
    appendix, templates = build_valueset_appendix(ruleset), build_template_appendix(ruleset)
    files = {
        "catalog.md": render_markdown(blocks), "catalog.html": render_html(blocks), "catalog.json": as_json,
        "valuesets.md": render_markdown(appendix),
        "valuesets.html": render_html(appendix, title="SIR CDS value sets (catalogue appendix)"),
        "templates.md": render_markdown(templates),
        "templates.html": render_html(templates, title="SIR CDS card templates (catalogue appendix)"),
    }
    for name, text in files.items():
        (output / name).write_text(text, encoding="utf-8")
    sizes = ", ".join(f"{name} {len(text.encode()) // 1024} KB" for name, text in files.items())
    click.echo(f"wrote {len(files)} files in {output} ({len(ruleset.rules)} rules): {sizes}")
