"""Alembic migrations of the service schema (a package so that wheels ship it)."""
