"""Alembic migrations: apply, re-apply, match the models, downgrade; on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cds.service.db import downgrade, make_engine, migrate
from cds.service.models import Base
from cds.service.why.store import EvaluationRecord  # noqa: F401  issue 12: its table is on Base.metadata too

TABLES = {"cds_call", "cds_card", "cds_feedback"}


def test_migrations_create_the_model_schema_and_are_idempotent(db_url):
    db = make_engine(db_url)
    try:
        migrate(db)
        migrate(db)  # a second start does nothing
        with db.connect() as conn:
            assert TABLES <= set(inspect(conn).get_table_names())
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        downgrade(db, "base")
        with db.connect() as conn:
            assert not TABLES & set(inspect(conn).get_table_names())
        migrate(db)
        with db.connect() as conn:
            assert TABLES <= set(inspect(conn).get_table_names())
    finally:
        db.dispose()


def test_sqlite_file_is_created_under_the_data_dir(tmp_path):
    from cds.service.config import Settings

    settings = Settings(data_dir=tmp_path / "nested" / "data")
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path / 'nested' / 'data' / 'cds.sqlite3'}"
    db = make_engine(settings.resolved_database_url())
    try:
        migrate(db)
    finally:
        db.dispose()
    assert (tmp_path / "nested" / "data" / "cds.sqlite3").is_file()
