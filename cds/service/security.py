"""Authenticate CDS clients: the JWT every CDS Hooks 2.0 call carries (spec "Trusting CDS Clients").

Checks, cheapest first so junk never triggers a JWKS fetch (best-practice order): header (``alg`` in
the asymmetric allow-list, ``kid`` present, ``typ`` JWT when given) -> ``iss`` trusted -> ``jku``
allowed -> ``aud`` equals the called URL -> ``exp``/``iat`` within the clock skew and a bounded
lifetime -> signature with the issuer's key -> ``jti`` not seen before. Any failure is one
:class:`Unauthorized`; the reason is logged for operators and never sent to the caller.

Keys come from a locally configured JWKS (inline or file) or from JWKS URLs on the issuer's
allow-list, cached for ``jwks_cache_ttl_s`` and refetched when an unknown ``kid`` arrives (at most
once per ``jwks_min_refresh_interval_s`` per URL, so a stream of bogus kids cannot hammer the issuer).
The replay cache is the database table ``cds_jti`` (:mod:`cds.service.replay`), shared by every replica
of the service; ``CDS_REPLAY_CACHE=memory`` keeps it in this process instead (one replica only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from cds.service.config import IssuerConfig, Settings
from cds.service.errors import Overloaded, Unauthorized
from cds.service.fhir import is_loopback_host
from cds.service.replay import DatabaseReplayCache

__all__ = ["Caller", "JwksCache", "JwtVerifier", "ReplayCache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """A verified CDS client (or the anonymous caller in open mode)."""

    iss: str | None
    sub: str | None = None
    tenant: str | None = None


ANONYMOUS = Caller(iss=None)


_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


@dataclass(frozen=True)
class _Key:
    """A public key and its JWK members (to check it fits the token's alg)."""

    jwk: jwt.PyJWK
    data: dict[str, Any]

    def fits(self, alg: str) -> bool:
        if self.data.get("alg") not in (None, alg):
            return False
        kty = self.data.get("kty")
        if kty == "EC":
            return _CURVES.get(alg) == self.data.get("crv")
        if kty == "RSA":
            return alg[:2] in ("RS", "PS")
        return False


def _keyset(jwks: Any, source: str) -> dict[str, _Key]:
    """kid -> signing key of a JWKS document; keys for encryption or without kid are skipped."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError(f"{source} is not a JWKS document (no 'keys' list)")
    keys: dict[str, _Key] = {}
    for item in jwks["keys"]:
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
            continue
        if item.get("use") not in (None, "sig"):
            continue
        if item.get("kty") == "oct":
            continue  # symmetric keys are never acceptable
        try:
            keys[item["kid"]] = _Key(jwt.PyJWK(item), dict(item))
        except jwt.PyJWTError as exc:
            log.warning("JWKS %s: key %s skipped: %s", source, item.get("kid"), exc)
    return keys


class JwksCache:
    """JWKS documents by URL, cached, refreshed on an unknown kid (rate limited)."""

    def __init__(self, *, client: httpx.AsyncClient, ttl_s: float, min_refresh_interval_s: float) -> None:
        self._client = client
        self._ttl = ttl_s
        self._min_refresh = min_refresh_interval_s
        self._entries: dict[str, tuple[float, dict[str, _Key]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0  # observable in tests

    async def _fetch(self, url: str) -> dict[str, _Key]:
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(parts.hostname)):
            raise Unauthorized(f"JWKS URL {url} is not https")
        self.fetches += 1
        try:
            response = await self._client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = _keyset(response.json(), url)
        except (httpx.HTTPError, ValueError) as exc:
            raise Unauthorized(f"JWKS {url} could not be fetched: {type(exc).__name__}: {exc}") from None
        self._entries[url] = (time.monotonic(), keys)
        return keys

    async def key(self, url: str, kid: str) -> _Key:
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            entry = self._entries.get(url)
            if entry is None or now - entry[0] > self._ttl:
                keys = await self._fetch(url)
            else:
                keys = entry[1]
                if kid not in keys and now - entry[0] >= self._min_refresh:
                    keys = await self._fetch(url)  # key rotation: the issuer may have a new key
            if kid not in keys:
                raise Unauthorized(f"kid {kid!r} not in JWKS {url}")
            return keys[kid]


class ReplayCache:
    """``(iss, jti)`` pairs seen, each kept until its token expires (plus skew); bounded in size."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max = max_entries

    def check_and_add(self, iss: str, jti: str, expires_at: float) -> bool:
        """True when new (and now remembered); False for a replay."""
        now = time.time()
        while self._seen:
            oldest_key, oldest_exp = next(iter(self._seen.items()))
            if oldest_exp > now and len(self._seen) < self._max:
                break
            self._seen.popitem(last=False)
        key = (iss, jti)
        if key in self._seen and self._seen[key] > now:
            return False
        self._seen[key] = expires_at
        self._seen.move_to_end(key)
        return True


class JwtVerifier:
    """Verifies bearer JWTs against the configured trusted issuers."""

    def __init__(self, settings: Settings, *, client: httpx.AsyncClient,
                 shared_replays: DatabaseReplayCache | None = None) -> None:
        """``shared_replays``: the database jti cache all replicas share (else this process's memory)."""
        self.settings = settings
        self.issuers: dict[str, IssuerConfig] = dict(settings.trusted_issuers)
        self._static: dict[str, dict[str, _Key]] = {}
        for iss, config in self.issuers.items():
            static = config.static_jwks()
            if static is not None:
                self._static[iss] = _keyset(static, f"configured JWKS of {iss}")
        self.jwks = JwksCache(client=client, ttl_s=settings.jwks_cache_ttl_s,
                              min_refresh_interval_s=settings.jwks_min_refresh_interval_s)
        self.replays = ReplayCache()
        self.shared_replays = shared_replays

    async def _signing_key(self, iss: str, config: IssuerConfig, header: dict[str, Any]) -> _Key:
        kid: str = header["kid"]
        jku = header.get("jku")
        static = self._static.get(iss, {})
        if jku is not None:
            if not isinstance(jku, str):
                raise Unauthorized("jku is not a string")
            if jku not in config.jku and (config.jku or not (static or config.jwks_url)):
                raise Unauthorized(f"jku {jku!r} is not on the allow-list of {iss}")
        if kid in static:
            return static[kid]
        if jku is not None and jku in config.jku:
            return await self.jwks.key(jku, kid)
        if config.jwks_url:
            return await self.jwks.key(config.jwks_url, kid)
        raise Unauthorized(f"kid {kid!r} is not a configured key of {iss}")

    async def _first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        if self.shared_replays is None:
            return self.replays.check_and_add(iss, jti, expires_at)
        try:
            return await self.shared_replays.check_and_add_async(iss, jti, expires_at)
        except Exception:  # the database is down: no way to know if this is a replay
            log.exception("the jti replay cache (database) cannot be reached")
            raise Overloaded("the service cannot check the token now; retry shortly") from None

    async def verify(self, token: str, *, audience: str | Sequence[str]) -> Caller:
        """The caller of a valid token; ``audience``: the URL(s) this call may be addressed to."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"not a JWT: {type(exc).__name__}") from None
        alg = header.get("alg")
        if alg not in self.settings.jwt_algorithms:
            raise Unauthorized(f"alg {alg!r} is not accepted")
        if not isinstance(header.get("kid"), str) or not header["kid"]:
            raise Unauthorized("no kid in the JWT header")
        if "typ" in header and str(header["typ"]).upper() != "JWT":
            raise Unauthorized(f"typ {header['typ']!r} is not JWT")
        iss = unverified.get("iss")
        if not isinstance(iss, str) or iss not in self.issuers:
            raise Unauthorized(f"issuer {iss!r} is not trusted")
        wanted = [audience] if isinstance(audience, str) else list(audience)
        audiences = [form for url in wanted for form in (url.rstrip("/"), url.rstrip("/") + "/")]
        aud = unverified.get("aud")
        if not audiences or not (aud in audiences or (isinstance(aud, list) and set(aud) & set(audiences))):
            raise Unauthorized(f"aud {aud!r} is not this endpoint ({', '.join(wanted) or 'no public URL configured'})")
        skew = self.settings.clock_skew_s
        now = time.time()
        exp, iat = unverified.get("exp"), unverified.get("iat")
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
            raise Unauthorized("exp and iat are required numbers")
        if exp < now - skew:
            raise Unauthorized("token expired")
        if exp - iat > self.settings.max_token_lifetime_s:
            raise Unauthorized("token lifetime (exp - iat) is too long")
        key = await self._signing_key(iss, self.issuers[iss], header)
        if not key.fits(alg):
            raise Unauthorized(f"key {header['kid']} ({key.data.get('kty')}) does not fit alg {alg}")
        try:
            claims = jwt.decode(
                token, key.jwk.key, algorithms=[alg], audience=audiences, issuer=iss, leeway=skew,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"JWT rejected: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # wrong key type for alg and similar: still just "unauthorized"
            raise Unauthorized(f"JWT verification failed: {type(exc).__name__}") from None
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise Unauthorized("jti must be a non-empty string")
        if not await self._first_use(iss, jti, float(claims["exp"]) + skew):
            raise Unauthorized(f"jti {jti} replayed")
        tenant = claims.get("tenant")
        return Caller(iss=iss, sub=claims.get("sub"), tenant=tenant if isinstance(tenant, str) else None)
