"""``cds rules``: the informatician's commands; one module per subcommand in :mod:`cds.cli.rules_cmds`."""

from __future__ import annotations

import click

from cds.cli.rules_cmds import catalog, facts, fingerprint, impact, schema, test, validate

__all__ = ["command"]


@click.group(name="rules", short_help="Validate, test, document and export the schema of rule files.")
def command() -> None:
    """Work on rule files: validate, test, catalogue, schema, facts, fingerprints, impact.

    \b
    Typical loop after editing rulesets/rules/<id>.yaml:
      cds rules validate            every problem, with file:line and rule id
      cds rules test                run each rule's <id>.test.yaml cases
      cds rules catalog -o build/   the catalogue to sign off (Markdown + HTML)
      cds rules fingerprint --update  record the new versions' fingerprints
      cds rules impact --baseline rulesets --candidate my-rulesets POPULATION --out impact/
    """


command.add_command(schema.command)
command.add_command(validate.command)
command.add_command(test.command)
command.add_command(catalog.command)
command.add_command(fingerprint.command)
command.add_command(facts.command)
command.add_command(impact.command)
