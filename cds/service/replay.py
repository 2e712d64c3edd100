"""The JWT ``jti`` replay cache in the database, so several service replicas refuse a replayed token.

CDS Hooks 2.0 lets a service refuse a token whose ``jti`` it has seen. An in-process cache only sees
what reached this process: behind a load balancer a token replayed to another replica would pass.
Each accepted ``(iss, jti)`` is inserted into ``cds_jti`` with its expiry; the primary key makes the
database, shared by all replicas, the arbiter: the second insert of the same pair fails, on whichever
replica it arrives, and that call is refused. Rows past their expiry are deleted now and then (at most
once per ``cleanup_interval_s`` per process); an expired row met on insert is simply replaced, so a
late clean-up never refuses a valid token.

The key is a SHA-256 of ``iss`` and ``jti`` (fixed width, whatever the client sends); the issuer is
kept in clear for operators.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

import anyio
from sqlalchemy import CursorResult, DateTime, String, delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cds.service.models import Base

__all__ = ["DatabaseReplayCache", "JtiRecord"]

log = logging.getLogger(__name__)


class JtiRecord(Base):
    """One accepted token id, remembered until the token expires (plus the clock skew)."""

    __tablename__ = "cds_jti"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(iss NUL jti), hex
    iss: Mapped[str] = mapped_column(String(500), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)


def _key(iss: str, jti: str) -> str:
    return hashlib.sha256(f"{iss}\0{jti}".encode("utf-8", "surrogatepass")).hexdigest()


class DatabaseReplayCache:
    """``(iss, jti)`` pairs in ``cds_jti``; :meth:`check_and_add` is atomic across processes."""

    def __init__(self, sessions: sessionmaker[Session], *, cleanup_interval_s: float = 60.0) -> None:
        self._sessions = sessions
        self._cleanup_interval = cleanup_interval_s
        self._last_cleanup = 0.0

    def check_and_add(self, iss: str, jti: str, expires_at: float) -> bool:
        """True when new (and now remembered); False for a replay. Blocking: run in a thread."""
        now = datetime.now(UTC)
        expiry = datetime.fromtimestamp(expires_at, UTC)
        key = _key(iss, jti)
        with self._sessions() as session:
            try:
                session.add(JtiRecord(key=key, iss=iss[:500], expires_at=expiry))
                session.commit()
                new = True
            except IntegrityError:
                session.rollback()
                # seen before: a replay unless that token has expired (a clean-up not yet run)
                result = session.execute(
                    update(JtiRecord).where(JtiRecord.key == key, JtiRecord.expires_at <= now).values(expires_at=expiry)
                )
                replaced = cast(CursorResult[Any], result).rowcount
                session.commit()
                new = replaced == 1
        self._maybe_cleanup()
        return new

    async def check_and_add_async(self, iss: str, jti: str, expires_at: float) -> bool:
        return await anyio.to_thread.run_sync(self.check_and_add, iss, jti, expires_at)

    def _maybe_cleanup(self) -> None:
        if time.monotonic() - self._last_cleanup < self._cleanup_interval:
            return
        self._last_cleanup = time.monotonic()
        self.cleanup()

    def cleanup(self) -> int:
        """Delete expired rows; the number deleted."""
        try:
            with self._sessions() as session:
                result = session.execute(delete(JtiRecord).where(JtiRecord.expires_at < datetime.now(UTC)))
                deleted = cast(CursorResult[Any], result).rowcount
                session.commit()
        except Exception:  # noqa: BLE001 - a failed clean-up is retried next time; never fails a call
            log.warning("could not delete expired jti rows", exc_info=True)
            return 0
        return int(deleted or 0)
