"""Audit bodies that survive any JSON: the raw body gzip-compressed, its size, truncation; card override reasons, feedback on unknown cards marked.

Revision ID: 0002_audit_body
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_audit_body"
down_revision = "0001"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("cds_call") as batch:
        batch.add_column(sa.Column("request_gz", sa.LargeBinary()))
        batch.add_column(sa.Column("request_bytes", sa.Integer()))
        batch.add_column(sa.Column("request_truncated", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("cds_card") as batch:
        batch.add_column(sa.Column("override_reasons", JSONType))
    with op.batch_alter_table("cds_feedback") as batch:
        batch.add_column(sa.Column("card_known", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("cds_feedback") as batch:
        batch.drop_column("card_known")
    with op.batch_alter_table("cds_card") as batch:
        batch.drop_column("override_reasons")
    with op.batch_alter_table("cds_call") as batch:
        batch.drop_column("request_truncated")
        batch.drop_column("request_bytes")
        batch.drop_column("request_gz")
