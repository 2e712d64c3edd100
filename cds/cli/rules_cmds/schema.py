"""``cds rules schema``: print the JSON Schema of rule, definitions or test files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cds.authoring.schemas import KINDS, json_schema

__all__ = ["command"]


@click.command(name="schema")
@click.option("--kind", type=click.Choice(sorted(KINDS)), default="rule", show_default=True,
              help="Which file format. Example: --kind tests")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to this file instead of stdout. Example: -o rule.schema.json")
def command(kind: str, output: Path | None) -> None:
    """Print the JSON Schema of a rule file (or --kind definitions / tests) for editor completion.

    \b
    Example (VS Code, YAML extension), in settings.json:
      "yaml.schemas": {"rule.schema.json": "rulesets/rules/*.yaml"}
    """
    text = json.dumps(json_schema(kind), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
