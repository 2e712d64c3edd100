"""Audit trail of service calls, cards returned, clinician feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cds_call",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("hook", sa.String(100)),
        sa.Column("hook_instance", sa.String(100)),
        sa.Column("patient_id", sa.String(200)),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ruleset_digest", sa.String(64)),
        sa.Column("rule_ids", JSONType, nullable=False),
        sa.Column("card_uuids", JSONType, nullable=False),
        sa.Column("fetched_keys", JSONType, nullable=False),
        sa.Column("notes", JSONType, nullable=False),
        sa.Column("request", JSONType),
        sa.Column("request_raw", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("client_iss", sa.String(500)),
    )
    op.create_index("ix_cds_call_hook_instance", "cds_call", ["hook_instance"])
    op.create_index("ix_cds_call_patient_id", "cds_call", ["patient_id"])
    op.create_table(
        "cds_card",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.Integer(), sa.ForeignKey("cds_call.id", ondelete="CASCADE"), nullable=False),
        sa.Column("card_uuid", sa.String(100), nullable=False),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("rule_version", sa.String(50)),
        sa.Column("indicator", sa.String(20), nullable=False),
        sa.Column("patient_id", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cds_card_card_uuid", "cds_card", ["card_uuid"])
    op.create_table(
        "cds_feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("dedup_key", sa.String(64), nullable=False, unique=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("card_uuid", sa.String(100), nullable=False),
        sa.Column("rule_id", sa.String(200)),
        sa.Column("rule_version", sa.String(50)),
        sa.Column("call_id", sa.Integer(), sa.ForeignKey("cds_call.id", ondelete="SET NULL")),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("accepted_suggestions", JSONType, nullable=False),
        sa.Column("override_system", sa.String(500)),
        sa.Column("override_code", sa.String(200)),
        sa.Column("override_display", sa.String(500)),
        sa.Column("override_comment", sa.Text()),
        sa.Column("outcome_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("item", JSONType, nullable=False),
        sa.Column("client_iss", sa.String(500)),
    )
    op.create_index("ix_cds_feedback_card_uuid", "cds_feedback", ["card_uuid"])


def downgrade() -> None:
    op.drop_index("ix_cds_feedback_card_uuid", table_name="cds_feedback")
    op.drop_table("cds_feedback")
    op.drop_index("ix_cds_card_card_uuid", table_name="cds_card")
    op.drop_table("cds_card")
    op.drop_index("ix_cds_call_patient_id", table_name="cds_call")
    op.drop_index("ix_cds_call_hook_instance", table_name="cds_call")
    op.drop_table("cds_call")
