"""``cds rules catalog [DIR]``: the Markdown and HTML catalogue of every rule, for sign-off."""

from __future__ import annotations

from pathlib import Path

import click

from cds._exceptions import RulesetError
from cds.cli.rules_cmds import rulesets_argument

__all__ = ["command"]


@click.command(name="catalog")
@rulesets_argument
@click.option("-o", "--output", "output", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write catalog.md and catalog.html into this folder (created if needed). Example: -o build/")
@click.option("--format", "fmt", type=click.Choice(["markdown", "html"]), default="markdown", show_default=True,
              help="Without --output: which format to print on stdout.")
def command(directory: Path | None, output: Path | None, fmt: str) -> None:
    """Generate the rule catalogue: id, title, version, status, hooks, conditions with thresholds and
    units, value sets with their codes, card text, evidence links and test counts.

    The rulesets must validate first (the catalogue documents what the service would run).
    """
    from cds.authoring.catalog import build_catalog, render_html, render_markdown
    from cds.authoring.gate import load_validated

    try:
        ruleset = load_validated(directory)
    except RulesetError as exc:
        click.echo(f"cannot build the catalogue: {exc}", err=True)
        raise SystemExit(1) from None
    blocks = build_catalog(ruleset)
    if output is None:
        click.echo(render_markdown(blocks) if fmt == "markdown" else render_html(blocks), nl=False)
        return
    output.mkdir(parents=True, exist_ok=True)
    (output / "catalog.md").write_text(render_markdown(blocks), encoding="utf-8")
    (output / "catalog.html").write_text(render_html(blocks), encoding="utf-8")
    click.echo(f"wrote {output / 'catalog.md'} and {output / 'catalog.html'} ({len(ruleset.rules)} rules)")
