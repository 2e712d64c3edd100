"""Database operations of the service: plain keyword-only functions, no HTTP code.

Each function opens its own short session; callers run them in a worker thread (they are blocking).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from cds.service.models import CallRecord, CardRecord, FeedbackRecord
from cds.service.schemas import FeedbackItem
from cds.service.why import store as why_store

__all__ = ["CallAudit", "CardAudit", "FeedbackOutcome", "count_rows", "record_call", "record_feedback"]


@dataclass
class CardAudit:
    card_uuid: str
    rule_id: str
    rule_version: str | None
    indicator: str


@dataclass
class CallAudit:
    """What one service call asked and what it was answered; filled in as the call proceeds."""

    service_id: str
    received_at: datetime
    outcome: str = "error"
    http_status: int = 500
    latency_ms: float = 0.0
    hook: str | None = None
    hook_instance: str | None = None
    patient_id: str | None = None
    ruleset_digest: str | None = None
    cards: list[CardAudit] = field(default_factory=list)
    fetched_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    request: Any | None = None
    request_raw: str | None = None
    error: str | None = None
    client_iss: str | None = None
    why: Any | None = None  # issue 12: cds.service.why.store.Snapshot, stored with the call


def record_call(*, sessions: sessionmaker[Session], audit: CallAudit) -> int:
    """Store one call and its cards; returns the call id."""
    with sessions.begin() as session:
        call = CallRecord(
            received_at=audit.received_at,
            service_id=audit.service_id[:200],
            hook=audit.hook,
            hook_instance=audit.hook_instance,
            patient_id=audit.patient_id,
            outcome=audit.outcome,
            http_status=audit.http_status,
            latency_ms=round(audit.latency_ms, 3),
            ruleset_digest=audit.ruleset_digest,
            rule_ids=[c.rule_id for c in audit.cards],
            card_uuids=[c.card_uuid for c in audit.cards],
            fetched_keys=list(audit.fetched_keys),
            notes=list(audit.notes),
            request=audit.request,
            request_raw=audit.request_raw,
            error=audit.error,
            client_iss=audit.client_iss,
        )
        session.add(call)
        session.flush()
        for card in audit.cards:
            session.add(CardRecord(
                call_id=call.id, card_uuid=card.card_uuid, service_id=audit.service_id,
                rule_id=card.rule_id, rule_version=card.rule_version, indicator=card.indicator,
                patient_id=audit.patient_id, created_at=audit.received_at,
            ))
        if audit.why is not None:  # issue 12: what the engine saw, in the same transaction
            why_store.add_evaluation(session, call.id, audit.why)
        return call.id


@dataclass
class FeedbackOutcome:
    stored: int = 0
    duplicates: int = 0
    unknown_cards: list[str] = field(default_factory=list)


def _dedup_key(service_id: str, item: FeedbackItem) -> str:
    """Content hash of an item; the timestamp in UTC so one instant written two ways is one item."""
    content = item.model_dump(mode="json", exclude_none=True)
    content["outcomeTimestamp"] = item.outcomeTimestamp.astimezone(UTC).isoformat()
    canonical = json.dumps(
        {"service": service_id, "item": content},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_feedback(
    *, sessions: sessionmaker[Session], service_id: str, items: list[FeedbackItem], client_iss: str | None
) -> FeedbackOutcome:
    """Store feedback items linked to the card (and so the rule) they are about; duplicates are no-ops.

    Duplicates are detected by a hash of the item's content (the spec warns clients may resend), and
    inserted with ON CONFLICT DO NOTHING so concurrent re-sends cannot race into two rows.
    """
    outcome = FeedbackOutcome()
    received_at = datetime.now(UTC)
    with sessions.begin() as session:
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        for item in items:
            card = session.execute(
                select(CardRecord).where(CardRecord.card_uuid == item.card).order_by(CardRecord.id.desc()).limit(1)
            ).scalar_one_or_none()
            if card is None:
                outcome.unknown_cards.append(item.card)
            reason = item.overrideReason.reason if item.overrideReason and item.overrideReason.reason else None
            values: dict[str, Any] = {
                "dedup_key": _dedup_key(service_id, item),
                "received_at": received_at,
                "service_id": service_id,
                "card_uuid": item.card,
                "rule_id": card.rule_id if card else None,
                "rule_version": card.rule_version if card else None,
                "call_id": card.call_id if card else None,
                "outcome": item.outcome,
                "accepted_suggestions": [s.id for s in item.acceptedSuggestions or []],
                "override_system": reason.system if reason else None,
                "override_code": reason.code if reason else None,
                "override_display": reason.display if reason else None,
                "override_comment": item.overrideReason.userComment if item.overrideReason else None,
                "outcome_timestamp": item.outcomeTimestamp.astimezone(UTC),
                "item": item.model_dump(mode="json", exclude_none=True),
                "client_iss": client_iss,
            }
            # The Table itself, from the metadata: ``__table__`` is only typed as a FromClause.
            table = FeedbackRecord.metadata.tables[FeedbackRecord.__tablename__]
            statement = (insert(table).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
                         .returning(table.c.id))
            if session.execute(statement).first() is not None:
                outcome.stored += 1
            else:
                outcome.duplicates += 1
    return outcome


def count_rows(*, sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())
