"""Alembic environment for the service schema; run through :func:`cds.service.db.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cds.service.models import Base
from cds.service.replay import JtiRecord  # noqa: F401 - registers cds_jti on Base.metadata
from cds.service.why.store import EvaluationRecord  # noqa: F401  issue 12: cds_evaluation on Base.metadata

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = config.attributes.get("engine")
    if engine is None:
        from cds.service.db import make_engine

        url = config.get_main_option("sqlalchemy.url")
        if url is None:
            raise RuntimeError("alembic: no connection, engine or sqlalchemy.url given; run the migrations "
                               "through cds.service.db.migrate, which sets them")
        engine = make_engine(url)
    with engine.begin() as conn:
        _run(conn)


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
