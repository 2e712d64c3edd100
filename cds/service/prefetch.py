"""Check what the EHR prefetched against our templates and fetch the rest from ``fhirServer``.

CDS Hooks 2.0 "Prefetch Template": a client may satisfy none, some or all templates, send an
OperationOutcome for a key it failed on, and paginate; the service must check and fetch what is
missing, and answer 412 when it cannot. Our policy per key:

* a FHIR resource or Bundle: used as sent; a Bundle with a ``next`` link has its remaining pages
  fetched (same origin as fhirServer only);
* missing, or an OperationOutcome: fetched; impossible (no fhirServer, unreachable, error) -> 412;
* ``null`` ("the client has no data"): fetched when a fhirServer is given, else taken as no data.

Values are read by ``resourceType`` downstream, so fetched data simply replace the key's value.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio

from cds.service.errors import PrefetchUnavailable
from cds.service.fhir import FhirClient, FhirFetchError, FhirSession
from cds.service.ssrf import allowed_fhir_servers

__all__ = ["FETCH_FAILED", "PrefetchResult", "complete_prefetch", "render_template"]

# The one text a caller gets for any failure to obtain data from fhirServer (refused, unreachable,
# timed out, an error status, not FHIR): different texts would let a caller scan ports and hosts
# through the service. The reason is logged for operators.
FETCH_FAILED = "the prefetch data could not be obtained from fhirServer"

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")


@dataclass
class PrefetchResult:
    prefetch: dict[str, Any]
    fetched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def render_template(template: str, context: dict[str, Any]) -> str:
    """Replace ``{{context.x}}`` tokens with URL-encoded context values (primitives only)."""

    def substitute(match: re.Match[str]) -> str:
        value = context.get(match.group(1))
        if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
            raise PrefetchUnavailable(
                f"prefetch token context.{match.group(1)} has no value", field=f"context.{match.group(1)}"
            )
        return quote(str(value), safe="")

    return _TOKEN.sub(substitute, template)


def _has_next(value: dict[str, Any]) -> bool:
    return value.get("resourceType") == "Bundle" and any(
        isinstance(link, dict) and link.get("relation") == "next" for link in value.get("link") or []
    )


async def complete_prefetch(
    *,
    templates: dict[str, str],
    prefetch: dict[str, Any] | None,
    context: dict[str, Any],
    fhir_server: str | None,
    access_token: str | None,
    client: FhirClient,
    deadline_s: float,
    allowed_servers: tuple[str, ...] | None = None,
) -> PrefetchResult:
    """Return the prefetch to evaluate: what was sent, completed from the FHIR server.

    ``allowed_servers``: the FHIR base URLs the verified caller may name (its issuer's
    ``fhir_servers``); by default those the route recorded for this call
    (:func:`cds.service.ssrf.allowed_fhir_servers`). Every fetch of the call uses one
    :class:`~cds.service.fhir.FhirSession` (its own connections, closed when the call ends), and all
    of them together get ``deadline_s``.
    """
    allowed = allowed_fhir_servers() if allowed_servers is None else allowed_servers
    sent = dict(prefetch or {})
    result = PrefetchResult(prefetch=sent)
    to_fetch: dict[str, str] = {}
    to_page: dict[str, dict[str, Any]] = {}
    for key, template in templates.items():
        value = sent.get(key, ...)
        if value is ...:
            reason = "missing"
        elif value is None:
            if not fhir_server:
                result.notes.append(f"prefetch.{key} is null: no data")
                continue
            reason = "null"
        elif value.get("resourceType") == "OperationOutcome":
            reason = "an OperationOutcome"
        else:
            if _has_next(value):
                to_page[key] = value
            continue
        if not fhir_server:
            raise PrefetchUnavailable(
                f"prefetch.{key} is {reason} and the request has no fhirServer to fetch it from",
                field=f"prefetch.{key}",
            )
        to_fetch[key] = render_template(template, context)

    if not to_fetch and not to_page:
        return result
    if to_page and not fhir_server:
        for key in to_page:
            result.notes.append(f"prefetch.{key} is paginated but there is no fhirServer: first page only")
        to_page = {}
    if not fhir_server:  # nothing is left to fetch: a missing value without a server raised above
        return result

    server: str = fhir_server
    session: FhirSession

    async def fetch_one(key: str, relative: str) -> None:
        try:
            fetched = await session.fetch(server, relative, access_token)
        except FhirFetchError as exc:
            log.warning("prefetch.%s could not be fetched: %s", key, exc)
            raise PrefetchUnavailable(FETCH_FAILED, field=f"prefetch.{key}") from None
        sent[key] = fetched.resource
        result.fetched.append(key)
        result.notes += [f"prefetch.{key}: {note}" for note in fetched.notes]

    async def page_one(key: str, bundle: dict[str, Any]) -> None:
        try:
            fetched = await session.follow_pages(server, bundle, access_token)
        except FhirFetchError as exc:
            log.warning("prefetch.%s: a next page could not be fetched: %s", key, exc)
            raise PrefetchUnavailable(FETCH_FAILED, field=f"prefetch.{key}") from None
        sent[key] = fetched.resource
        result.notes.append(f"prefetch.{key}: {fetched.pages} page(s) read")
        result.notes += [f"prefetch.{key}: {note}" for note in fetched.notes]

    try:
        with anyio.fail_after(deadline_s):
            async with client.session(allowed) as session, anyio.create_task_group() as group:
                for key, relative in to_fetch.items():
                    group.start_soon(fetch_one, key, relative)
                for key, bundle in to_page.items():
                    group.start_soon(page_one, key, bundle)
    except TimeoutError:
        log.warning("the FHIR server did not answer within %g s", deadline_s)
        raise PrefetchUnavailable(FETCH_FAILED) from None
    except BaseExceptionGroup as group:  # the first failure wins; others are of the same kind
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    result.fetched.sort()
    return result
