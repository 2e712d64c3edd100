"""Card-bound, expiring link tokens for the "why this card" page.

Why a signed token and not a session: the page is opened from an EHR side panel, in whatever browser
the EHR embeds, by a clinician who has no account here. The link itself is the credential, so it is
bound to one card of one call, expires (``CDS_WHY_TTL_S``, default 4 hours) and is signed with a
server secret (HMAC-SHA256): it cannot be guessed, widened to another card or extended.

The secret is ``CDS_WHY_SECRET`` (at least 32 characters) or, when unset, 32 random bytes generated
once and kept in ``<CDS_DATA_DIR>/why-secret`` (mode 0600), so links survive a restart. The secret is
never logged or shown (:class:`pydantic.SecretStr`).

Token form: ``<payload>.<signature>``, both base64url without padding; the payload is
``v1|<evaluation key>|<card uuid>|<expiry, unix seconds>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["LinkClaims", "LinkSigner", "WhySettings", "signer_for"]

_VERSION = "v1"
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")  # evaluation keys and card uuids
_SECRET_FILE = "why-secret"
_MAX_TOKEN = 600  # characters; anything longer is not ours


class WhySettings(BaseSettings):
    """``CDS_WHY_SECRET`` and ``CDS_WHY_TTL_S`` (kept apart from the service settings on purpose: only
    this package reads them)."""

    model_config = SettingsConfigDict(env_prefix="CDS_WHY_", env_file=None, extra="ignore", env_ignore_empty=True)

    secret: SecretStr | None = Field(default=None, min_length=32)
    ttl_s: int = Field(default=4 * 3600, ge=60, le=7 * 24 * 3600)


@dataclass(frozen=True)
class LinkClaims:
    """What a valid token says: which stored evaluation, which card, until when."""

    evaluation_key: str
    card_uuid: str
    expires_at: int


class TokenExpired(Exception):
    """The signature is right but the link is too old (answered 401, nothing else said)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and checks link tokens with one secret."""

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        if len(secret) < 32:
            raise ValueError("the why-page secret must be at least 32 bytes")
        self._secret = secret
        self.ttl_s = ttl_s

    def __repr__(self) -> str:  # never show the secret
        return f"LinkSigner(ttl_s={self.ttl_s})"

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def sign(self, evaluation_key: str, card_uuid: str, *, now: float | None = None, ttl_s: int | None = None) -> str:
        if not _ID.match(evaluation_key) or not _ID.match(card_uuid):
            raise ValueError("evaluation key and card uuid must be short plain identifiers")
        expires = int((time.time() if now is None else now) + (self.ttl_s if ttl_s is None else ttl_s))
        payload = f"{_VERSION}|{evaluation_key}|{card_uuid}|{expires}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, *, now: float | None = None) -> LinkClaims | None:
        """The claims of a genuine, unexpired token; None when it is not ours (malformed or forged).

        Raises :class:`TokenExpired` for a genuine token past its expiry. The signature is checked
        before anything in the payload is believed, in constant time.
        """
        if not token or len(token) > _MAX_TOKEN or token.count(".") != 1:
            return None
        payload_text, mac_text = token.split(".")
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        parts = payload.decode("utf-8", "replace").split("|")
        if len(parts) != 4 or parts[0] != _VERSION or not parts[3].isdigit():
            return None
        claims = LinkClaims(evaluation_key=parts[1], card_uuid=parts[2], expires_at=int(parts[3]))
        if claims.expires_at <= (time.time() if now is None else now):
            raise TokenExpired()
        return claims


def _persisted_secret(data_dir: Path) -> bytes:
    """The secret kept in the data folder, created (0600, exclusively) on first use."""
    path = data_dir / _SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32))
    text = path.read_text(encoding="ascii").strip()
    if len(text) < 32:  # a concurrent first start still writing, or a damaged file: refuse, never weaken
        raise RuntimeError(f"{path} holds no usable secret (expected 64 hex characters); delete it to regenerate")
    return text.encode("ascii")


_SIGNERS: dict[tuple[str, str, int], LinkSigner] = {}


def signer_for(data_dir: Path) -> LinkSigner:
    """The signer of this service (``CDS_WHY_*`` read now; the persisted secret read once)."""
    settings = WhySettings()
    configured = settings.secret.get_secret_value() if settings.secret is not None else ""
    key = (str(data_dir.resolve()), hashlib.sha256(configured.encode()).hexdigest(), settings.ttl_s)
    signer = _SIGNERS.get(key)
    if signer is None:
        secret = configured.encode() if configured else _persisted_secret(data_dir)
        signer = _SIGNERS[key] = LinkSigner(secret, settings.ttl_s)
    return signer


__all__ += ["TokenExpired"]
