"""``cds evaluate``: one patient file in, the CDS Hooks response JSON out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cds._exceptions import InputError
from cds.fhir.ingest import HOOKS, parse_json

__all__ = ["evaluate", "load_input_file"]


def load_input_file(path: Path) -> object:
    """Read and parse a JSON file; every failure names the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_json(raw, source=str(path))


@click.command()
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--hook", type=click.Choice(HOOKS), default=None,
              help="Hook to evaluate. Requests carry their own; bare Bundles default to patient-view. "
                   "Example: --hook order-sign")
@click.option("--now", "now", default=None, metavar="ISO8601",
              help="Evaluation time, for reproducible results (default: the current time). "
                   "Example: --now 2026-06-01T09:00:00Z")
@click.option("--rulesets", "rulesets", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="CDS_RULESETS", show_envvar=True,
              help="Rulesets folder (default: the built-in rulesets/). Example: --rulesets ./rulesets")
@click.option("--include-drafts", is_flag=True, default=False,
              help="Also run rules whose status is draft (never done by default). Example: --include-drafts")
@click.option("--pretty/--compact", default=True, help="Indent the JSON output (default: pretty). Example: --compact")
def evaluate(path: Path, hook: str | None, now: str | None, rulesets: Path | None, include_drafts: bool,
             pretty: bool) -> None:
    """Evaluate PATH (a CDS Hooks request or a FHIR R4 Bundle) and print {"cards": [...]}.

    \b
    Examples:
      cds evaluate fhir_samples/requests/sir-suspected-fasting-insulin-uiu.json
      cds evaluate bundle.json --hook order-sign --now 2026-06-01
    Exit status: 0 with the response on stdout; 2 when the file is unusable (the message names the
    file and the problem); 3 when the rulesets do not load.
    """
    from cds.engine import Engine
    from cds.fhir.dates import parse_now
    from cds.rules.loader import load_ruleset

    payload = load_input_file(path)
    try:
        instant = parse_now(now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--now") from None
    # parse + schema only (validation is `cds rules validate`'s job), from the user cache when unchanged
    engine = Engine(load_ruleset(rulesets, use_cache=True), include_drafts=include_drafts)
    try:
        result = engine.evaluate(payload, hook=hook, now=instant)
    except InputError as exc:
        raise InputError(f"{path}: {exc}", field=exc.field) from None
    json.dump(result.response.to_json(), sys.stdout, indent=2 if pretty else None, ensure_ascii=False)
    sys.stdout.write("\n")
