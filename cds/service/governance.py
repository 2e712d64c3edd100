"""Governance figures for clinical informaticians: how each rule version is used and answered.

Why here and not in a BI tool: ONC HTI-1 (45 CFR 170.315(b)(11)(ii)(C)) asks that feedback on
evidence-based decision support be exportable with the intervention, the action taken, the user,
the date and the location; and a safety committee reviewing a rule needs its override rate per
version before signing off the next one. Both read the audit tables the service already writes
(``cds_call``, ``cds_card``, ``cds_feedback``); nothing is stored twice.

Plain blocking functions (callers run them in a worker thread), portable SQL (SQLite, PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cds.service.models import CallRecord, CardRecord, FeedbackRecord

__all__ = ["DateRange", "EXPORT_FIELDS", "RuleFigures", "Summary", "feedback_rows", "parse_range", "summary"]

INDICATORS = ("critical", "warning", "info")


@dataclass(frozen=True)
class DateRange:
    """Whole UTC days, ``start`` to ``end`` inclusive."""

    start: date
    end: date

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def until(self) -> datetime:  # exclusive
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)


def parse_range(start: str | None, end: str | None, *, today: date | None = None) -> DateRange:
    """``from``/``to`` query parameters (YYYY-MM-DD); default: the last 30 days. ValueError names the field."""
    today = today or datetime.now(UTC).date()

    def day(text: str | None, name: str, default: date) -> date:
        if text is None or text == "":
            return default
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a date (YYYY-MM-DD)") from None

    last = day(end, "to", today)
    first = day(start, "from", last - timedelta(days=29))
    if first > last:
        raise ValueError(f"from: {first} is after to ({last})")
    if (last - first).days > 3660:
        raise ValueError("from: a range of at most 10 years")
    return DateRange(first, last)


@dataclass
class RuleFigures:
    rule_id: str
    rule_version: str
    calls: int = 0
    cards: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INDICATORS, 0))
    accepted: int = 0
    overridden: int = 0
    reasons: list[tuple[str, int]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.rule_id} {self.rule_version}"

    @property
    def card_total(self) -> int:
        return sum(self.cards.values())

    @property
    def override_rate(self) -> float | None:
        answered = self.accepted + self.overridden
        return self.overridden / answered if answered else None

    def to_json(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "rule_version": self.rule_version, "calls": self.calls,
                "cards": dict(self.cards), "accepted": self.accepted, "overridden": self.overridden,
                "override_rate": self.override_rate,
                "override_reasons": [{"reason": r, "count": n} for r, n in self.reasons]}


@dataclass
class Summary:
    range: DateRange
    calls: int
    calls_ok: int
    rules: list[RuleFigures]
    feedback_unknown_cards: int

    def to_json(self) -> dict[str, Any]:
        return {"from": self.range.start.isoformat(), "to": self.range.end.isoformat(), "calls": self.calls,
                "calls_ok": self.calls_ok, "feedback_on_unknown_cards": self.feedback_unknown_cards,
                "rules": [r.to_json() for r in self.rules]}


def _reason_text(code: str | None, display: str | None, comment: str | None) -> str:
    if display or code:
        return display or code or ""
    return "no reason given" if not comment else "comment only"


def summary(sessions: sessionmaker[Session], window: DateRange) -> Summary:
    """Per rule and version: calls with a card, cards by indicator, feedback outcomes and override reasons.

    Cards and calls count by when the call was received; feedback by its ``outcomeTimestamp`` (when
    the clinician acted), so a range shows what was decided in it.
    """
    figures: dict[tuple[str, str], RuleFigures] = {}

    def rule(rule_id: str, version: str | None) -> RuleFigures:
        key = (rule_id, version or "?")
        if key not in figures:
            figures[key] = RuleFigures(rule_id=rule_id, rule_version=version or "?")
        return figures[key]

    with sessions() as session:
        in_range = (CallRecord.received_at >= window.since) & (CallRecord.received_at < window.until)
        calls = session.execute(select(func.count()).select_from(CallRecord).where(in_range)).scalar_one()
        calls_ok = session.execute(select(func.count()).select_from(CallRecord)
                                   .where(in_range & (CallRecord.outcome == "ok"))).scalar_one()
        card_range = (CardRecord.created_at >= window.since) & (CardRecord.created_at < window.until)
        for rule_id, version, indicator, count in session.execute(
                select(CardRecord.rule_id, CardRecord.rule_version, CardRecord.indicator, func.count())
                .where(card_range).group_by(CardRecord.rule_id, CardRecord.rule_version, CardRecord.indicator)):
            entry = rule(rule_id, version)
            entry.cards[indicator] = entry.cards.get(indicator, 0) + int(count)
        for rule_id, version, call_count in session.execute(
                select(CardRecord.rule_id, CardRecord.rule_version, func.count(func.distinct(CardRecord.call_id)))
                .where(card_range).group_by(CardRecord.rule_id, CardRecord.rule_version)):
            rule(rule_id, version).calls = int(call_count)
        feedback_range = ((FeedbackRecord.outcome_timestamp >= window.since)
                          & (FeedbackRecord.outcome_timestamp < window.until))
        unknown = 0
        reasons: dict[tuple[str, str], dict[str, int]] = {}
        for fb_rule, version, outcome, code, display, comment, count in session.execute(
                select(FeedbackRecord.rule_id, FeedbackRecord.rule_version, FeedbackRecord.outcome,
                       FeedbackRecord.override_code, FeedbackRecord.override_display, FeedbackRecord.override_comment,
                       func.count())
                .where(feedback_range)
                .group_by(FeedbackRecord.rule_id, FeedbackRecord.rule_version, FeedbackRecord.outcome,
                          FeedbackRecord.override_code, FeedbackRecord.override_display,
                          FeedbackRecord.override_comment)):
            if fb_rule is None:
                unknown += int(count)
                continue
            entry = rule(fb_rule, version)
            if outcome == "accepted":
                entry.accepted += int(count)
            elif outcome == "overridden":
                entry.overridden += int(count)
                text = _reason_text(code, display, comment)
                bucket = reasons.setdefault((entry.rule_id, entry.rule_version), {})
                bucket[text] = bucket.get(text, 0) + int(count)
    for key, bucket in reasons.items():
        figures[key].reasons = sorted(bucket.items(), key=lambda item: (-item[1], item[0]))
    ordered = sorted(figures.values(), key=lambda r: (r.rule_id, r.rule_version))
    return Summary(range=window, calls=int(calls), calls_ok=int(calls_ok), rules=ordered,
                   feedback_unknown_cards=unknown)


#: the export's columns (HTI-1 (b)(11)(ii)(C): intervention, action, feedback, user, date, location)
EXPORT_FIELDS = ["feedback_id", "outcome_timestamp", "received_at", "rule_id", "rule_version", "card_uuid",
                 "outcome", "action_taken", "accepted_suggestions", "override_reason_code",
                 "override_reason_display", "override_reason_system", "override_comment", "user", "user_source",
                 "service_id", "hook", "encounter", "client", "call_received_at"]


def _context(call: CallRecord | None) -> dict[str, Any]:
    request = call.request if call is not None and isinstance(call.request, dict) else {}
    context = request.get("context")
    return context if isinstance(context, dict) else {}


def _user(feedback: FeedbackRecord, call: CallRecord | None) -> tuple[str | None, str | None]:
    """Who acted: the feedback item's own user if a client sends one, else the user the card was shown to."""
    item = feedback.item if isinstance(feedback.item, dict) else {}
    for key in ("userId", "user"):
        if isinstance(item.get(key), str):
            return item[key], "feedback"
    user = _context(call).get("userId")
    return (user, "call context.userId") if isinstance(user, str) else (None, None)


def feedback_rows(sessions: sessionmaker[Session], window: DateRange) -> list[dict[str, Any]]:
    """Every feedback item acted on in ``window``, oldest first, with the call it answers.

    No patient identifier is exported: the card uuid links to the audit trail for who needs it.
    """
    rows: list[dict[str, Any]] = []
    with sessions() as session:
        query = (select(FeedbackRecord, CallRecord)
                 .join(CallRecord, CallRecord.id == FeedbackRecord.call_id, isouter=True)
                 .where(FeedbackRecord.outcome_timestamp >= window.since)
                 .where(FeedbackRecord.outcome_timestamp < window.until)
                 .order_by(FeedbackRecord.outcome_timestamp, FeedbackRecord.id))
        for feedback, call in session.execute(query):
            accepted = list(feedback.accepted_suggestions or [])
            if feedback.outcome == "accepted":
                action = f"accepted {len(accepted)} suggestion(s)" if accepted else "accepted (no suggestion taken)"
            else:
                action = "overridden (card dismissed)"
            user, user_source = _user(feedback, call)
            context = _context(call)
            encounter = context.get("encounterId")
            rows.append({
                "feedback_id": feedback.id,
                "outcome_timestamp": _iso(feedback.outcome_timestamp),
                "received_at": _iso(feedback.received_at),
                "rule_id": feedback.rule_id, "rule_version": feedback.rule_version, "card_uuid": feedback.card_uuid,
                "outcome": feedback.outcome, "action_taken": action, "accepted_suggestions": " ".join(accepted),
                "override_reason_code": feedback.override_code, "override_reason_display": feedback.override_display,
                "override_reason_system": feedback.override_system, "override_comment": feedback.override_comment,
                "user": user, "user_source": user_source,
                "service_id": feedback.service_id, "hook": call.hook if call is not None else None,
                "encounter": encounter if isinstance(encounter, str) else None,
                "client": feedback.client_iss or (call.client_iss if call is not None else None),
                "call_received_at": _iso(call.received_at) if call is not None else None,
            })
    return rows


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were stored in UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
