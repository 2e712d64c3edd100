"""Persistence models (SQLAlchemy 2 declarative): the audit trail and clinician feedback.

The schema is owned by Alembic (``cds/service/migrations``); these classes must match it, which
``tests/service/test_db.py`` checks with Alembic's autogenerate comparison. Types are portable
between SQLite (default) and PostgreSQL (JSON becomes JSONB there).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy import false, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "CallRecord", "CardRecord", "FeedbackRecord"]

JSONType = JSON().with_variant(JSONB(), "postgresql")
UTCDateTime = DateTime(timezone=True)


class Base(DeclarativeBase):
    """Declarative base of the service's tables."""


class CallRecord(Base):
    """One service call (any outcome): who asked what, what we answered, how long it took."""

    __tablename__ = "cds_call"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    service_id: Mapped[str] = mapped_column(String(200), nullable=False)
    hook: Mapped[str | None] = mapped_column(String(100))
    hook_instance: Mapped[str | None] = mapped_column(String(100), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(200), index=True)
    outcome: Mapped[str] = mapped_column(String(40), nullable=False)  # ok, bad-request, ...
    http_status: Mapped[int] = mapped_column(Integer, nullable=False)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)
    ruleset_digest: Mapped[str | None] = mapped_column(String(64))
    rule_ids: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    card_uuids: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    fetched_keys: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    notes: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    # The body, access token redacted, sanitised so any JSON survives either database (NUL and lone
    # surrogates -> U+FFFD, non-finite numbers -> null); None when it is over CDS_AUDIT_MAX_BODY_BYTES.
    request: Mapped[Any | None] = mapped_column(JSONType)
    request_raw: Mapped[str | None] = mapped_column(Text)  # only when the body was not JSON (redacted)
    # 0002: the body's bytes as received (tokens redacted), gzip; the exact text for replay and disputes.
    request_gz: Mapped[bytes | None] = mapped_column(LargeBinary)
    request_bytes: Mapped[int | None] = mapped_column(Integer)  # size of the body as received
    request_truncated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    error: Mapped[str | None] = mapped_column(Text)  # what the caller was told (never internals)
    client_iss: Mapped[str | None] = mapped_column(String(500))  # verified JWT issuer, never the JWT


class CardRecord(Base):
    """One card returned: links feedback (by card uuid) to the rule and version that produced it."""

    __tablename__ = "cds_card"
    __table_args__ = (Index("ix_cds_card_card_uuid", "card_uuid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("cds_call.id", ondelete="CASCADE"), nullable=False)
    card_uuid: Mapped[str] = mapped_column(String(100), nullable=False)
    service_id: Mapped[str] = mapped_column(String(200), nullable=False)
    rule_id: Mapped[str] = mapped_column(String(200), nullable=False)
    rule_version: Mapped[str | None] = mapped_column(String(50))
    indicator: Mapped[str] = mapped_column(String(20), nullable=False)
    patient_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # 0002: the card's overrideReasons (Codings), so feedback carrying only a code gets its display.
    override_reasons: Mapped[list[Any] | None] = mapped_column(JSONType)


class FeedbackRecord(Base):
    """One feedback item; ``dedup_key`` makes re-sent duplicates a no-op."""

    __tablename__ = "cds_feedback"
    __table_args__ = (Index("ix_cds_feedback_card_uuid", "card_uuid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    service_id: Mapped[str] = mapped_column(String(200), nullable=False)
    card_uuid: Mapped[str] = mapped_column(String(100), nullable=False)
    rule_id: Mapped[str | None] = mapped_column(String(200))  # None when the card is not ours/known
    rule_version: Mapped[str | None] = mapped_column(String(50))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("cds_call.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)  # accepted | overridden
    accepted_suggestions: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    override_system: Mapped[str | None] = mapped_column(String(500))
    override_code: Mapped[str | None] = mapped_column(String(200))
    override_display: Mapped[str | None] = mapped_column(String(500))
    override_comment: Mapped[str | None] = mapped_column(Text)
    outcome_timestamp: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    item: Mapped[Any] = mapped_column(JSONType, nullable=False)  # the item as sent
    # 0002: False when no card of this service has this uuid (feedback kept, clearly marked, no rule).
    card_known: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=true())
    client_iss: Mapped[str | None] = mapped_column(String(500))
