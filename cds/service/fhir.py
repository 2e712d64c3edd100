"""A small async FHIR client for filling in prefetch data the EHR did not send.

Why hand-rolled on httpx rather than a FHIR client library: we need only ``read`` and ``search`` with
next-link paging, and control over four things libraries do not give together:

* the bearer token goes only to a ``fhirServer`` the caller may name (:mod:`cds.service.ssrf`: the
  issuer's ``fhir_servers``, checked addresses); redirects are not followed and a ``next`` link
  outside the allowed base is not fetched (it would leak the token);
* every fetch has connect/read timeouts and one request has an overall deadline;
* paging stops after ``max_pages`` pages (a note says the data were truncated);
* **one connection pool per call** (:meth:`FhirClient.session`), closed when the call ends. A pool
  shared by all calls was the cause of "after rounds of hung FHIR servers every later fetch times
  out, even to a healthy server": a fetch cancelled by the prefetch deadline while its connection
  was still being opened left that connection in httpcore's pool in the CONNECTING state forever;
  after 100 of them (httpx's ``max_connections``) every later request waited for a free slot and
  timed out. Calls waiting on a hung server also took the slots unrelated calls needed. With a
  pool per call, whatever a call leaves behind dies with it and no call can starve another.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpcore
import httpx

from cds.service.ssrf import FhirServerPolicy, FhirServerRefused, GuardedBackend, lies_under

__all__ = ["FetchResult", "FhirClient", "FhirFetchError", "FhirSession", "is_loopback_host", "same_origin"]

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
_CONNECTIONS_PER_CALL = 8  # parallel fetches of one call (prefetch keys), each to the same server


class FhirFetchError(Exception):
    """Raised when a FHIR read/search cannot be completed; the message is for the log only."""


@dataclass
class FetchResult:
    """One resource or one merged searchset Bundle, with what happened on the way."""

    resource: dict[str, Any] | None
    pages: int = 1
    notes: list[str] = field(default_factory=list)


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


class FhirClient:
    """Settings and policy for FHIR fetches; :meth:`session` gives one call its own connections."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_pages: int = 20,
        allow_http: bool = False,
        policy: FhirServerPolicy | None = None,
    ) -> None:
        self.max_pages = max_pages
        self.allow_http = allow_http
        self.policy = policy or FhirServerPolicy.build(open_mode=True)
        self.timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout,
                                     pool=connect_timeout)
        self.open_sessions = 0  # observable: must return to 0 when no call is running
        # built once: loading the CA bundle costs ~10-20 ms, too much to repeat for every call's pool
        self._ssl_context = httpx.create_ssl_context()

    async def aclose(self) -> None:
        """Nothing is shared between calls, so nothing to close (kept for the app's lifespan)."""

    def _transport(self) -> httpx.AsyncHTTPTransport:
        transport = httpx.AsyncHTTPTransport(verify=self._ssl_context, retries=0)
        # httpx has no parameter for httpcore's network backend: the pool is rebuilt with the guarded
        # one, so every connection of this client goes through the address checks.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ssl_context, max_connections=_CONNECTIONS_PER_CALL,
            max_keepalive_connections=_CONNECTIONS_PER_CALL, keepalive_expiry=5.0, http1=True, http2=False,
            retries=0, network_backend=GuardedBackend(self.policy),
        )
        return transport

    @asynccontextmanager
    async def session(self, allowed: Sequence[str]) -> AsyncIterator[FhirSession]:
        """A session for one call, allowed the given FHIR base URLs; its connections close at exit."""
        client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, transport=self._transport(),
                                   headers={"Accept": FHIR_JSON}, trust_env=False)
        self.open_sessions += 1
        try:
            yield FhirSession(self, client, tuple(allowed))
        finally:
            self.open_sessions -= 1
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await client.aclose()

    async def fetch(self, base: str, relative: str, token: str | None, *, allowed: Sequence[str] = ()) -> FetchResult:
        """One fetch in a session of its own (tools and tests; calls use :meth:`session`)."""
        async with self.session(allowed) as session:
            return await session.fetch(base, relative, token)


class FhirSession:
    """Reads and searches one call's ``fhirServer`` with its bearer token, on the call's own pool."""

    def __init__(self, owner: FhirClient, client: httpx.AsyncClient, allowed: tuple[str, ...]) -> None:
        self.max_pages = owner.max_pages
        self.allow_http = owner.allow_http
        self.policy = owner.policy
        self.allowed = allowed
        self._client = client

    def check_server(self, url: str) -> None:
        """Refuse a URL we must not send a token to: not allowed for this caller, or plain http off loopback."""
        try:
            self.policy.check_url(url, self.allowed)
        except FhirServerRefused as exc:
            raise FhirFetchError(f"refused before connecting: {exc}") from None
        parts = urlsplit(url)
        if parts.scheme == "https":
            return
        if parts.scheme == "http" and (self.allow_http or is_loopback_host(parts.hostname)):
            return
        raise FhirFetchError("fhirServer must use https")

    async def _get_json(self, url: str, token: str | None) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self._client.get(url, headers=headers)
        except FhirServerRefused as exc:
            raise FhirFetchError(f"refused {_safe(url)}: {exc}") from None
        except httpx.TimeoutException:
            raise FhirFetchError(f"FHIR server timed out on {_safe(url)}") from None
        except httpx.HTTPError as exc:
            raise FhirFetchError(f"FHIR server unreachable for {_safe(url)} ({type(exc).__name__})") from None
        if response.status_code == 404 and "?" not in url:
            return None  # a read of a resource that does not exist: no data, like a null prefetch
        if response.status_code != 200:
            raise FhirFetchError(f"FHIR server answered {response.status_code} to {_safe(url)}")
        try:
            body = response.json()
        except ValueError:
            raise FhirFetchError(f"FHIR server sent non-JSON for {_safe(url)}") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FhirFetchError(f"FHIR server sent no FHIR resource for {_safe(url)}")
        if body["resourceType"] == "OperationOutcome":
            raise FhirFetchError(f"FHIR server sent an OperationOutcome for {_safe(url)}")
        return body

    async def fetch(self, base: str, relative: str, token: str | None) -> FetchResult:
        """GET ``base/relative`` and, for a searchset, every next page up to ``max_pages``."""
        try:
            self.policy.check_base(base, self.allowed)
        except FhirServerRefused as exc:
            raise FhirFetchError(f"refused before connecting: {exc}") from None
        url = base.rstrip("/") + "/" + relative.lstrip("/")
        self.check_server(url)
        first = await self._get_json(url, token)
        if first is None or first.get("resourceType") != "Bundle":
            return FetchResult(first)
        return await self.follow_pages(base, first, token)

    async def follow_pages(self, base: str, bundle: dict[str, Any], token: str | None) -> FetchResult:
        """Append the entries of every ``next`` page to ``bundle`` (a copy), same origin only."""
        merged = {**bundle, "entry": list(bundle.get("entry") or [])}
        result = FetchResult(merged, pages=1)
        current = bundle
        while True:
            next_url = _next_link(current)
            if next_url is None:
                break
            next_url = urljoin(base.rstrip("/") + "/", next_url)
            if not same_origin(next_url, base):
                result.notes.append(f"next link to another origin not followed ({_safe(next_url)})")
                break
            if not self.policy.open_mode and not any(lies_under(next_url, b) for b in self.allowed):
                result.notes.append(f"next link outside the allowed FHIR base not followed ({_safe(next_url)})")
                break
            if result.pages >= self.max_pages:
                result.notes.append(f"stopped after {self.max_pages} pages; later pages were not read")
                log.warning("FHIR paging stopped after %d pages for %s", self.max_pages, _safe(next_url))
                break
            self.check_server(next_url)
            page = await self._get_json(next_url, token)
            if page is None or page.get("resourceType") != "Bundle":
                raise FhirFetchError(f"next page {_safe(next_url)} is not a Bundle")
            merged["entry"].extend(page.get("entry") or [])
            result.pages += 1
            current = page
        merged["link"] = [link for link in merged.get("link") or [] if link.get("relation") != "next"]
        if not merged["link"]:
            merged.pop("link")
        return result


def _next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


def _safe(url: str) -> str:
    """A URL for messages: path only, the query (which may carry identifiers) dropped."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
