"""What the engine saw, kept beside the audit row, and the "Why this card" link on each card.

Why a copy of the request: the audit row keeps the body the EHR sent, but the engine also saw what the
service fetched from the FHIR server for missing prefetch keys. The page must show exactly what the
call had, never a new FHIR fetch (the record may have changed, and the access token is gone), so the
*completed* request (prefetch with the fetched resources, no ``fhirAuthorization``) is stored,
zlib-compressed, in ``cds_evaluation``, in the same transaction as the audit row (:mod:`cds.service.crud`).

The flow in :mod:`cds.service.calls`: :func:`capture` after the engine answered (keeps the snapshot on
the audit record), :func:`attach_links` before the response goes out (adds the signed link to every
card), then ``crud.record_call`` inserts :func:`evaluation_row` with the call.
"""

from __future__ import annotations

import logging
import uuid
import json
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, ForeignKey, Integer, LargeBinary, String, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cds.service.models import Base
from cds.service.why.tokens import signer_for

__all__ = ["EvaluationRecord", "Snapshot", "add_evaluation", "attach_links", "capture", "evaluation_row", "load_snapshot"]

log = logging.getLogger(__name__)

LINK_LABEL = "Why this card"
_JSON = JSON().with_variant(JSONB(), "postgresql")


class EvaluationRecord(Base):
    """One evaluated call: the completed request and the cards as answered (migration 0004_evaluation)."""

    __tablename__ = "cds_evaluation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)  # in the link token
    call_id: Mapped[int] = mapped_column(ForeignKey("cds_call.id", ondelete="CASCADE"), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    hook: Mapped[str | None] = mapped_column(String(100))
    ruleset_digest: Mapped[str | None] = mapped_column(String(64))
    card_uuids: Mapped[list[str]] = mapped_column(_JSON, nullable=False, default=list)
    snapshot: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # zlib(JSON), see Snapshot
    snapshot_bytes: Mapped[int] = mapped_column(Integer, nullable=False)  # uncompressed size


class Snapshot:
    """The completed request, the evaluation instant and the cards as answered (before links)."""

    def __init__(self, *, key: str, request: dict[str, Any], now: datetime, hook: str | None,
                 ruleset_digest: str | None, cards: list[dict[str, Any]]) -> None:
        self.key = key
        self.request = request
        self.now = now
        self.hook = hook
        self.ruleset_digest = ruleset_digest
        self.cards = cards

    def card(self, card_uuid: str) -> dict[str, Any] | None:
        return next((c for c in self.cards if c.get("uuid") == card_uuid), None)


def capture(audit: Any, completed: dict[str, Any], body: dict[str, Any]) -> None:
    """Keep what the engine saw on ``audit`` (stored with it); cards are copied before links are added.

    ``completed`` is the request as evaluated (prefetch completed, no access token). Nothing is
    serialised here: that happens in the database thread (:func:`evaluation_row`).
    """
    cards = body.get("cards") or []
    if not cards:
        return  # no card, no link, nothing to explain
    try:
        copied = _loads(_dumps(cards))
    except Exception as exc:  # noqa: BLE001 - never cost the clinician the cards
        log.error("why page: the cards could not be copied (%s); answered without links", type(exc).__name__)
        return
    # The engine took "now" when its worker started on the call (it is not sent back); the instant just
    # after it answered is milliseconds from it, where the call's arrival can be seconds before (FHIR
    # fetches, queueing). The page says so if the stored values no longer give the card.
    audit.why = Snapshot(key=str(uuid.uuid4()), request=completed, now=datetime.now(UTC), hook=audit.hook,
                         ruleset_digest=audit.ruleset_digest, cards=copied)


def link_base(settings: Any, request: Any) -> str:
    """``CDS_PUBLIC_BASE_URL``, else the base URL this request came in on (right unless behind a proxy)."""
    if settings.public_base_url:
        return str(settings.public_base_url).rstrip("/")
    return str(request.base_url).rstrip("/")


def attach_links(state: Any, request: Any, audit: Any, body: dict[str, Any]) -> None:
    """Add a signed "Why this card" link (type ``absolute``) to every card of ``body``.

    A failure here must not cost the clinician the cards: it is logged (without the secret) and the
    cards go out without the link.
    """
    snapshot: Snapshot | None = getattr(audit, "why", None)
    if snapshot is None:
        return
    try:
        signer = signer_for(state.settings.data_dir)
        base = link_base(state.settings, request)
        for card in body.get("cards") or []:
            card_uuid = card.get("uuid")
            if not card_uuid:
                continue
            token = signer.sign(snapshot.key, card_uuid)
            links = card.setdefault("links", [])
            links.append({"label": LINK_LABEL, "url": f"{base}/why/{token}", "type": "absolute"})
    except Exception as exc:  # noqa: BLE001 - the cards matter more than the link
        log.error("could not add the why-page links (%s); cards answered without them", type(exc).__name__)


def _dumps(value: Any) -> bytes:
    """JSON bytes; what orjson refuses (a lone surrogate such as ``"\\ud800"``, valid JSON text) is written
    by the standard library with escapes, so any request the engine evaluated can be stored."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def add_evaluation(session: Session, call_id: int, snapshot: Snapshot) -> None:
    """Add the row to the audit transaction; a snapshot that cannot be serialised is logged and left out,
    never allowed to fail the audit record itself (the page then answers 404)."""
    try:
        row = evaluation_row(call_id, snapshot)
    except Exception as exc:  # noqa: BLE001 - the audit row matters more than the why page
        log.error("why page: the evaluation of call %s could not be stored (%s)", call_id, type(exc).__name__)
        return
    session.add(row)


def evaluation_row(call_id: int, snapshot: Snapshot) -> EvaluationRecord:
    """The row stored with the audit record (called by ``crud.record_call`` in its transaction)."""
    # orjson and zlib level 1: this runs on every call with cards, in the service process that is the
    # throughput limit (about 5 + 10 ms for a 3 MB request, against 30 + 20 ms with json and level 6)
    document = _dumps({"request": snapshot.request, "now": snapshot.now.isoformat(), "cards": snapshot.cards})
    return EvaluationRecord(key=snapshot.key, call_id=call_id, created_at=snapshot.now, hook=snapshot.hook,
                            ruleset_digest=snapshot.ruleset_digest,
                            card_uuids=[c.get("uuid") for c in snapshot.cards if c.get("uuid")],
                            snapshot=zlib.compress(document, 1), snapshot_bytes=len(document))


def load_snapshot(sessions: sessionmaker[Session], key: str, card_uuid: str) -> Snapshot | None:
    """The stored evaluation holding ``card_uuid``, or None (unknown key, or the card is not in it)."""
    with sessions() as session:
        row = session.execute(select(EvaluationRecord).where(EvaluationRecord.key == key)).scalar_one_or_none()
        if row is None or card_uuid not in (row.card_uuids or []):
            return None
        document = _loads(zlib.decompress(row.snapshot))
    return Snapshot(key=row.key, request=document["request"], now=datetime.fromisoformat(document["now"]),
                    hook=row.hook, ruleset_digest=row.ruleset_digest, cards=document["cards"])
