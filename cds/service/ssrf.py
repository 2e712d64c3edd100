"""Where the service may send a FHIR request (and the client's access token): SSRF defences.

A CDS Hooks request names its own ``fhirServer``; followed blindly that lets a caller make the service
connect anywhere (cloud metadata at 169.254.169.254, its own admin routes, internal hosts) with a bearer
token ready to send. Two independent checks, both before any byte leaves this host:

* **the URL** (:meth:`FhirServerPolicy.check_url`): outside open mode the ``fhirServer`` must equal or
  lie under one of the base URLs its verified issuer lists in ``fhir_servers`` (``CDS_TRUSTED_ISSUERS``);
  in open mode only loopback hosts. No user-info, no dot segments, no CR/LF or spaces.
* **the address** (:class:`GuardedBackend`, httpcore's network backend): the host is resolved here and
  every address it resolves to is checked; the connection goes to the checked address (no second
  lookup, so DNS rebinding cannot swap it). Link-local and cloud-metadata addresses are always refused;
  loopback, private and other non-global addresses only in open mode (loopback) or when inside
  ``CDS_FHIR_ALLOWED_NETWORKS``.

The allowed bases of the current call travel in a context variable set by the route after the JWT is
verified (:func:`allowed_fhir_servers`), so a call that set nothing is allowed nothing.
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio
import httpcore

__all__ = [
    "METADATA_ADDRESSES",
    "FhirServerPolicy",
    "FhirServerRefused",
    "GuardedBackend",
    "allowed_fhir_servers",
    "lies_under",
    "set_allowed_fhir_servers",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance-metadata endpoints of the big clouds; never a FHIR server, whatever is configured.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192", "169.254.169.123",
))

_NOTHING: tuple[str, ...] = ()
_ALLOWED: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("cds_allowed_fhir_servers",
                                                                          default=_NOTHING)


class FhirServerRefused(Exception):
    """The URL or address may not be contacted; the message is for the log, never for the caller."""


def set_allowed_fhir_servers(bases: Iterable[str]) -> None:
    """Record the verified caller's ``fhir_servers`` for the rest of this request (its task)."""
    _ALLOWED.set(tuple(bases))


def allowed_fhir_servers() -> tuple[str, ...]:
    """The current call's allowed FHIR base URLs (empty: none, unless in open mode)."""
    return _ALLOWED.get()


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def lies_under(url: str, base: str) -> bool:
    """``url`` equals ``base`` or is below it: same scheme, host and port, path below base's path."""
    pu, pb = urlsplit(url), urlsplit(base)
    if (pu.scheme.lower(), (pu.hostname or "").lower(), pu.port or _default_port(pu.scheme)) != (
            pb.scheme.lower(), (pb.hostname or "").lower(), pb.port or _default_port(pb.scheme)):
        return False
    base_path = pb.path.rstrip("/")
    return pu.path.rstrip("/") == base_path or pu.path.startswith(base_path + "/")


def _default_port(scheme: str) -> int | None:
    return {"https": 443, "http": 80}.get(scheme.lower())


def _is_loopback_name(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class FhirServerPolicy:
    """What FHIR servers the service may contact; built once from the settings."""

    open_mode: bool
    allowed_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def build(cls, *, open_mode: bool, allowed_networks: Sequence[str] = ()) -> FhirServerPolicy:
        return cls(open_mode, tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks))

    def check_url(self, url: str, allowed: Sequence[str]) -> None:
        """Raise :class:`FhirServerRefused` unless ``url`` may be requested in this call."""
        if any(c in url for c in "\r\n\t \x00\\"):
            raise FhirServerRefused("fhirServer contains whitespace, control characters or backslashes")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise FhirServerRefused(f"fhirServer is not a valid URL ({exc})") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise FhirServerRefused("fhirServer must be an http(s) URL with a host")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise FhirServerRefused("fhirServer may not carry user information")
        segments = parts.path.split("/")
        if any(s in (".", "..") or s.lower() in ("%2e", "%2e%2e", ".%2e", "%2e.") for s in segments):
            raise FhirServerRefused("fhirServer path has dot segments")
        if self.open_mode:
            if not _is_loopback_name(parts.hostname):
                raise FhirServerRefused(f"open mode: only loopback FHIR servers, not {parts.hostname}")
            return
        if not any(lies_under(url, base) for base in allowed):
            raise FhirServerRefused(f"{parts.scheme}://{parts.netloc}{parts.path} is not among the issuer's "
                                    "fhir_servers")

    def check_base(self, url: str, allowed: Sequence[str]) -> None:
        """:meth:`check_url` for a ``fhirServer`` itself: a base URL has no query or fragment (one would
        turn ``base/Patient/1`` into a request for another resource, e.g. ``/admin/x?/Patient/1``)."""
        if "?" in url or "#" in url:
            raise FhirServerRefused("fhirServer has a query or fragment")
        self.check_url(url, allowed)

    def check_address(self, address: IPAddress) -> None:
        """Raise :class:`FhirServerRefused` for an address no FHIR request may go to."""
        address = _unmapped(address)
        if address in METADATA_ADDRESSES or address.is_link_local:
            raise FhirServerRefused(f"{address} is a link-local or cloud-metadata address")
        if address.is_multicast or address.is_unspecified or address.is_reserved:
            raise FhirServerRefused(f"{address} is not a unicast host address")
        listed = any(address in network for network in self.allowed_networks)
        if self.open_mode:
            if not address.is_loopback:
                raise FhirServerRefused(f"open mode: {address} is not loopback")
            return
        if (address.is_loopback or address.is_private or not address.is_global) and not listed:
            raise FhirServerRefused(f"{address} is loopback or private and not in CDS_FHIR_ALLOWED_NETWORKS")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with every resolved address checked before the connection.

    TLS (SNI and certificate checks) still uses the URL's host name: httpcore starts TLS on the stream
    this returns with the origin's host, so connecting to the checked IP changes nothing else.
    """

    def __init__(self, policy: FhirServerPolicy) -> None:
        self.policy = policy
        self._backend = httpcore.AnyIOBackend()

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        found: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in found:
                found.append(address)
        return found

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port)
        for address in addresses:  # one bad address refuses the name: it may be handed out next time
            self.policy.check_address(address)
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(str(address), port, timeout=timeout,
                                                       local_address=local_address, socket_options=socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[typing.Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise FhirServerRefused("unix sockets are not FHIR servers")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)
