"""Database operations of the service: plain keyword-only functions, no HTTP code.

Each function opens its own short session; callers run them in a worker thread (they are blocking).

How a request body is kept (so that *any* valid JSON text survives SQLite and PostgreSQL):

* ``request_gz``: the body's bytes as received, tokens redacted (:func:`redact_text`), gzip-compressed
  in a binary column: NUL characters, lone surrogates (``\ud800``), ``1e400`` all stay exactly as sent.
  Bodies over ``CDS_AUDIT_MAX_BODY_BYTES`` keep their first that-many bytes and ``request_truncated``
  is set; ``request_bytes`` is the size received. When the token cannot be found to redact literally
  (written with escapes), the raw bytes are not kept, only the sanitised JSON below.
* ``request``: the parsed body (token redacted) *sanitised* for querying: NUL and lone surrogates in
  strings and keys become U+FFFD, non-finite numbers become null; None when its JSON text is over the
  same limit (the truncation is then recorded).
* Every other text column (patient id, hook instance, notes, error) is sanitised the same way.

A failed write raises; :func:`audit_failures` counts them for the metrics endpoint.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from cds.service.metrics import record_audit_failure
from cds.service.models import CallRecord, CardRecord, FeedbackRecord
from cds.service.redact import REDACTED, redact_text
from cds.service.schemas import FeedbackItem
from cds.service.why import store as why_store

__all__ = ["CallAudit", "CardAudit", "FeedbackOutcome", "StoredBody", "audit_failures", "count_audit_failure",
           "count_rows", "record_call", "record_feedback", "sanitise", "stored_body"]

_failures_lock = threading.Lock()
_failures = 0


def count_audit_failure() -> None:
    """Count one audit write that failed (the caller logs it and answers 503)."""
    global _failures
    with _failures_lock:
        _failures += 1
    record_audit_failure()  # the Prometheus counter (cds_audit_failures)


def audit_failures() -> int:
    """Audit writes that failed since the process started (for the Prometheus ``/metrics`` endpoint)."""
    with _failures_lock:
        return _failures


_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean_text(value: str) -> str:
    """``value`` with what a database text column cannot hold (NUL, lone surrogates) made U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _SURROGATE.sub("\ufffd", value)  # one U+FFFD per lone surrogate
    return value


def sanitise(value: Any) -> Any:
    """A copy of a JSON value that any database stores: see the module docstring (None stays None)."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_clean_text(str(k)): sanitise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sanitise(v) for v in value]
    return value


# Escapes that decode to what a database text cannot hold: \u0000 and surrogates (a lone one is the
# problem; a pair, such as an emoji, is merely sanitised for nothing). A byte search: ~5 ms for 3 MB.
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
# Substrings :func:`redact_text` could act on (a token key, a JWT, "bearer"); most bodies have none and
# skip the decode and the regexes (~200 ms on a 3 MB body). Plain byte searches, ~15 ms.
_TOKEN_HINTS = (b"access_token", b"refresh_token", b"id_token", b"eyJ", b"earer", b"EARER")


def _tokens_redacted(text: str, secrets: list[str]) -> bool:
    """Whether redacted body text has none of ``secrets`` left, read as JSON (so an escaped key or
    token, ``"access\\u005ftoken"``, cannot slip through as it would past a text search alone)."""
    if any(secret and secret != REDACTED and secret in text for secret in secrets):
        return False
    try:
        auth = json.loads(text).get("fhirAuthorization")
    except (ValueError, AttributeError):
        return False
    if not isinstance(auth, dict):
        return True
    return all(auth.get(key) in (None, REDACTED) for key in ("access_token", "refresh_token", "id_token"))


@dataclass
class StoredBody:
    """What the audit keeps of one body (see the module docstring)."""

    request: Any | None
    request_gz: bytes | None
    request_bytes: int
    truncated: bool
    notes: list[str]


def stored_body(raw: bytes, payload: Any, *, limit: int, secrets: list[str], non_finite: bool = False) -> StoredBody:
    """The audit's copy of a JSON body: redacted raw bytes (gzip, up to ``limit``) and sanitised JSON.

    ``payload`` is the parsed body with tokens already redacted; ``secrets`` the token values that
    must not appear in the stored raw bytes; ``non_finite``: the body holds numbers JSON cannot write
    back (the caller's number check found them). Cheap byte scans decide whether the costly steps
    (decode and redact, walk and sanitise) are needed at all: a 3 MB Synthea body needs neither.
    """
    notes: list[str] = []
    truncated = len(raw) > limit
    kept: bytes | None = raw
    if secrets or any(hint in raw for hint in _TOKEN_HINTS):
        text = redact_text(raw.decode("utf-8", "replace"))
        if secrets and not _tokens_redacted(text, secrets):
            notes.append("audit: raw body not kept (its access token could not be redacted in place)")
            kept = None
        else:
            kept = text.encode("utf-8")
    gz = gzip.compress(kept[:limit], compresslevel=1) if kept is not None else None  # fast; JSON shrinks ~8x
    request: Any | None = None
    if truncated:
        notes.append(f"audit: body over {limit} bytes; the JSON copy is not kept, the raw copy is truncated")
    else:
        request = sanitise(payload) if non_finite or _SUSPECT.search(raw) else payload
        if request is not payload and json.dumps(request, allow_nan=True) != json.dumps(payload, allow_nan=True):
            notes.append("audit: NUL, lone surrogates or non-finite numbers replaced in the JSON copy")
    return StoredBody(request, gz, len(raw), truncated, notes)


@dataclass
class CardAudit:
    card_uuid: str
    rule_id: str
    rule_version: str | None
    indicator: str
    override_reasons: list[dict[str, Any]] = field(default_factory=list)  # the card's overrideReasons


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
    request_gz: bytes | None = None
    request_bytes: int | None = None
    request_truncated: bool = False
    error: str | None = None
    client_iss: str | None = None
    why: Any | None = None  # issue 12: cds.service.why.store.Snapshot, stored with the call


def _text(value: str | None, size: int | None = None) -> str | None:
    if value is None:
        return None
    return _clean_text(value[:size] if size else value)


def record_call(*, sessions: sessionmaker[Session], audit: CallAudit) -> int:
    """Store one call and its cards in one transaction; returns the call id (raises on any failure).

    Every text is sanitised here (whatever the caller put in), so no value a client sent can make the
    write fail on PostgreSQL.
    """
    with sessions.begin() as session:
        call = CallRecord(
            received_at=audit.received_at,
            service_id=_clean_text(audit.service_id[:200]),
            hook=_text(audit.hook, 100),
            hook_instance=_text(audit.hook_instance, 100),
            patient_id=_text(audit.patient_id, 200),
            outcome=audit.outcome,
            http_status=audit.http_status,
            latency_ms=round(audit.latency_ms, 3),
            ruleset_digest=audit.ruleset_digest,
            rule_ids=[_clean_text(c.rule_id) for c in audit.cards],
            card_uuids=[_clean_text(c.card_uuid) for c in audit.cards],
            fetched_keys=[_clean_text(k) for k in audit.fetched_keys],
            notes=[_clean_text(n) for n in audit.notes],
            request=audit.request,
            request_raw=_text(audit.request_raw),
            request_gz=audit.request_gz,
            request_bytes=audit.request_bytes,
            request_truncated=audit.request_truncated,
            error=_text(audit.error),
            client_iss=_text(audit.client_iss, 500),
        )
        session.add(call)
        session.flush()
        for card in audit.cards:
            session.add(CardRecord(
                call_id=call.id, card_uuid=_clean_text(card.card_uuid), service_id=call.service_id,
                rule_id=_clean_text(card.rule_id), rule_version=card.rule_version, indicator=card.indicator,
                patient_id=call.patient_id, created_at=audit.received_at,
                override_reasons=card.override_reasons or None,
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
            display = reason.display if reason else None
            if reason is not None and display is None and card is not None:
                display = _card_display(card.override_reasons, reason.system, reason.code)
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
                "override_display": display,
                "override_comment": item.overrideReason.userComment if item.overrideReason else None,
                "outcome_timestamp": item.outcomeTimestamp.astimezone(UTC),
                "item": item.model_dump(mode="json", exclude_none=True),
                "client_iss": client_iss,
                "card_known": card is not None,
            }
            values = {k: sanitise(v) if isinstance(v, (str, dict, list)) else v for k, v in values.items()}
            # The Table itself, from the metadata: ``__table__`` is only typed as a FromClause.
            table = FeedbackRecord.metadata.tables[FeedbackRecord.__tablename__]
            statement = (insert(table).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
                         .returning(table.c.id))
            if session.execute(statement).first() is not None:
                outcome.stored += 1
            else:
                outcome.duplicates += 1
    return outcome


def _card_display(reasons: list[Any] | None, system: str | None, code: str) -> str | None:
    """The display the card itself offered for an override reason code (None when it offered none)."""
    for offered in reasons or []:
        if isinstance(offered, dict) and offered.get("code") == code and (
                system is None or offered.get("system") in (None, system)):
            display = offered.get("display")
            return display if isinstance(display, str) else None
    return None


def count_rows(*, sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())
