"""Database engine creation and schema migration (Alembic, run from the package, no alembic.ini).

SQLite is the embedded default (WAL journal, a busy timeout, foreign keys on) so ``cds serve`` needs
nothing installed; PostgreSQL is used when ``CDS_DATABASE_URL`` names it
(``postgresql+psycopg://user@host/db``). All access is synchronous SQLAlchemy run in worker threads,
so the event loop never blocks on the database.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker, Session

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["MIGRATIONS_DIR", "alembic_config", "downgrade", "make_engine", "make_sessionmaker", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine for ``url``; SQLite gets its folder created and safe pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, "timeout": 30, **kwargs.pop("connect_args", {})}
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # A database host that silently drops packets must not hold an audit write (and its thread)
        # for the OS's TCP timeout of minutes: the call answers 503 after CDS_AUDIT_TIMEOUT_S anyway.
        kwargs["connect_args"] = {"connect_timeout": 5, **kwargs.get("connect_args", {})}
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at the packaged migrations, bound to ``engine``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent: does nothing when already there).

    A database already at the one head of the packaged migrations is left alone without importing
    Alembic (about 0.2 s of a service start); anything else (a fresh database, an older schema, an
    unclear history) goes through ``alembic upgrade``.
    """
    if revision == "head" and _at_head(engine):
        return
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # replicas starting together on a fresh database: one migrates, the others wait here and
            # then find the schema at head (released at the end of this transaction)
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Take the schema back to ``revision`` (``base`` drops every service table)."""
    from alembic import command

    with engine.begin() as connection:
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


_MIGRATION_LOCK = 0x5C0D5_0001  # pg_advisory_xact_lock key of schema migrations (any fixed bigint)

_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*(.+)$", re.MULTILINE)


def _packaged_head() -> str | None:
    """The single head revision of the packaged migrations, read from the files (no Alembic import).

    None when the history is not one plain line (merges, branches, tuples): the caller then asks Alembic.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = {key: value.strip() for key, value in _REVISION.findall(path.read_text(encoding="utf-8"))}
        if "revision" not in found:
            continue
        revision, parent = found["revision"], found.get("down_revision", "None")
        if not re.fullmatch(r"\"[^\"]+\"|'[^']+'", revision) or not re.fullmatch(r"None|\"[^\"]+\"|'[^']+'", parent):
            return None
        revisions.add(revision[1:-1])
        if parent != "None":
            parents.add(parent[1:-1])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(engine: Engine) -> bool:
    """True when the database's recorded Alembic revision is exactly the packaged head."""
    head = _packaged_head()
    if head is None:
        return False
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return False
            versions = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
    except Exception:  # noqa: BLE001 - any doubt: let Alembic decide (and report)
        return False
    return versions == [head]
