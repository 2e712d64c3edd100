"""What the engine saw per evaluated call, for the "why this card" page (issue 12).

Revision ID: 0004_evaluation
Revises: 0003_jti
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_evaluation"
down_revision = "0003_jti"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cds_evaluation",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(36), nullable=False, unique=True),
        sa.Column("call_id", sa.Integer(), sa.ForeignKey("cds_call.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hook", sa.String(100)),
        sa.Column("ruleset_digest", sa.String(64)),
        sa.Column("card_uuids", JSONType, nullable=False),
        sa.Column("snapshot", sa.LargeBinary(), nullable=False),
        sa.Column("snapshot_bytes", sa.Integer(), nullable=False),
    )
    op.create_index("ix_cds_evaluation_call_id", "cds_evaluation", ["call_id"])


def downgrade() -> None:
    op.drop_index("ix_cds_evaluation_call_id", table_name="cds_evaluation")
    op.drop_table("cds_evaluation")
