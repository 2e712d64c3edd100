"""The ``cds`` command line: one module per command, this file only wires them together."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from cds._exceptions import CDSError, InputError

__all__ = ["cli", "main"]


# Each command's module is imported only when that command runs: ``cds evaluate`` must not pay for
# FastAPI, SQLAlchemy or uvicorn (``serve``), nor the authoring tools (``rules``). name -> module:attr.
_COMMANDS = {
    "evaluate": "cds.cli.evaluate:evaluate",
    "explain": "cds.cli.explain:command",
    "serve": "cds.cli.serve:command",
    "rules": "cds.cli.rules:command",
    "bench": "cds.cli.bench:command",
    "screen": "cds.cli.screen:command",
    "population": "cds.cli.population:command",
}


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (``cds --help`` imports them all)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in _COMMANDS:
            return command
        module_name, attribute = _COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        self.add_command(command, cmd_name)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True,
              help="More log output on stderr (-vv for debug). Example: cds -v evaluate FILE")
def cli(verbose: int) -> None:
    """Clinical decision support for severe insulin resistance and lipodystrophy.

    FHIR R4 in, SIR care pathways (durable_rules), CDS Hooks 2.0 cards out.

    \b
    Examples:
      cds evaluate fhir_samples/requests/sir-suspected-fasting-insulin-uiu.json
      cds evaluate patient-bundle.json --hook order-sign --now 2026-06-01
      cds serve --port 8000
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main() -> None:
    """Entry point: user errors exit 2 with one line on stderr; no tracebacks unless CDS_DEBUG=1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except CDSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for debugging only
        if os.environ.get("CDS_DEBUG"):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (set CDS_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)
