"""The service's own start-up: ``cds serve`` / ``python -m cds.service`` (uvicorn on the embedded defaults).

The command lives here, with the service, so the service owns its start-up: ``cds.cli.serve`` and
``cds.service.__main__`` only re-export it (the CLI depends on the service, never the reverse).

Order of start-up, and why: settings are checked first (cheap, clear errors); then the rulesets are
validated, compiled and their rule tests run in a throwaway process (durable_rules never runs in the
service process; a broken ruleset stops the start with every reason) - started before the web stack
is imported so the two overlap, and skipped when the gate cache holds a pass for exactly the same
files and code; then the database is opened and migrated (nothing to do, and no Alembic import, when
it is at head); then uvicorn starts and the engine workers start in parallel in the background, so
discovery answers without waiting for them.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["command", "main", "serve"]


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="CDS_HOST", show_envvar=True,
              help="Interface to listen on. Anything but loopback requires CDS_TRUSTED_ISSUERS (JWT auth).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), envvar="CDS_PORT",
              show_envvar=True, help="TCP port.")
@click.option("--rulesets", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="CDS_RULESETS", show_envvar=True,
              help="Rulesets folder (default: the built-in rulesets/). Example: --rulesets ./rulesets")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="CDS_DATA_DIR", show_envvar=True,
              help="Where the SQLite database lives when CDS_DATABASE_URL is not set (default: ./.data).")
@click.option("--ssl-certfile", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Serve HTTPS with this certificate (CDS Hooks requires TLS in production). "
                   "Example: --ssl-certfile cert.pem --ssl-keyfile key.pem")
@click.option("--ssl-keyfile", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Private key of --ssl-certfile. Example: --ssl-keyfile key.pem")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True, help="uvicorn and service log level. Example: --log-level debug")
@click.option("--watch/--no-watch", default=None, envvar="CDS_RELOAD_WATCH", show_envvar=True,
              help="Reload the rulesets when their files change, once they validate and their tests pass "
                   "(also: POST /admin/reload). Example: --watch")
@click.option("--include-drafts", is_flag=True, default=None, envvar="CDS_INCLUDE_DRAFTS", show_envvar=True,
              help="Also run rules whose status is draft (never by default). Example: --include-drafts")
@click.option("--workers", type=click.IntRange(1, 256), default=None, envvar="CDS_ENGINE_WORKERS", show_envvar=True,
              help="Engine worker processes (default: one per core). Each runs the rules single-threaded and is "
                   "replaced if it crashes or exceeds CDS_ENGINE_TIMEOUT_S. Example: --workers 4")
def serve(host: str, port: int, rulesets: Path | None, data_dir: Path | None, ssl_certfile: Path | None,
          ssl_keyfile: Path | None, log_level: str, watch: bool | None, include_drafts: bool | None,
          workers: int | None) -> None:
    """Serve CDS Hooks 2.0: GET /cds-services, POST /cds-services/{id}, POST /cds-services/{id}/feedback.

    \b
    Examples:
      cds serve                                   # http://127.0.0.1:8000/cds-services, open mode
      cds serve --port 9000 --rulesets ./rulesets --watch
      CDS_TRUSTED_ISSUERS='{"https://ehr.example.org": {"jwks_url": "https://ehr.example.org/jwks",
        "fhir_servers": ["https://ehr.example.org/fhir"]}}' CDS_PUBLIC_BASE_URL=https://cds.example.org \\
        cds serve --host 0.0.0.0 --ssl-certfile cert.pem --ssl-keyfile key.pem
    Settings come from CDS_* environment variables (CDS_DATABASE_URL, CDS_TRUSTED_ISSUERS,
    CDS_CORS_ORIGINS, ...; see cds/service/config.py). Exit status 1 when the rulesets do not
    validate, the database cannot be opened, or the bind is unsafe.
    """
    import logging

    import uvicorn
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from cds._exceptions import RulesetError
    from cds.service.config import Settings
    from cds.service.fhir import is_loopback_host

    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        cause = f"\n{exc.__cause__}" if exc.__cause__ else ""
        raise click.ClickException(f"invalid CDS_* settings: {exc}{cause}") from None
    updates = {k: v for k, v in {"rulesets": rulesets, "data_dir": data_dir, "reload_watch": watch,
                                 "include_drafts": include_drafts, "engine_workers": workers}.items() if v is not None}
    if updates:
        settings = settings.model_copy(update=updates)
    if settings.open_mode and not is_loopback_host(host):
        raise click.ClickException(
            f"refusing to listen on {host} without authentication: set CDS_TRUSTED_ISSUERS (trusted JWT "
            "issuers) or bind to 127.0.0.1 (open mode is for local development only)"
        )
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.ClickException("--ssl-certfile and --ssl-keyfile go together")

    from cds.service.holder import start_rules_check

    # validated, compiled and (CDS_RULE_TESTS_ON_START, default on) every rule's own tests passed, in a
    # throwaway process started now (or known at once from a cached pass for the same files and code);
    # the web stack is imported while it runs, and nothing is served before it has passed
    finish_check = start_rules_check(settings)
    from cds.service.app import create_app

    try:
        rules = finish_check()
    except RulesetError as exc:
        raise click.ClickException(
            f"the rulesets do not validate or their tests fail; the service was not started:\n{exc}") from None
    try:
        app = create_app(settings, rules=rules)
    except Exception as exc:  # database unreachable, migration failure: say which, stop
        raise click.ClickException(
            f"cannot open the database {settings.resolved_database_url().split('@')[-1]}: "
            f"{type(exc).__name__}: {exc}") from None
    logging.getLogger("cds").setLevel(log_level.upper())
    scheme = "https" if ssl_certfile else "http"
    mode = "open mode (no JWT)" if settings.open_mode else f"{len(settings.trusted_issuers)} trusted issuer(s)"
    click.echo(f"cds serve: {scheme}://{host}:{port}/cds-services, rulesets {rules[0].digest}, {mode}, "
               f"{settings.resolved_engine_workers()} engine worker(s)", err=True)
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, server_header=False, workers=None,
        log_config=_log_config(settings.log_format, log_level),
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
    )


def _log_config(log_format: str = "text", level: str = "info") -> dict:
    """uvicorn's logging config with the token-redacting filter on every handler (text or JSON lines)."""
    from cds.service.logs import log_config

    return log_config(log_format, level)


command = serve


def main(prog_name: str = "python -m cds.service") -> None:
    """``python -m cds.service``: the same command."""
    serve(prog_name=prog_name)
