"""``POST /cds-services/{id}/feedback``: what the clinician did with our cards (CDS Hooks 2.0 "Feedback")."""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cds.service import crud
from cds.service.api.body import check_content_type, parse_json_body, read_body, validate_or_400
from cds.service.api.deps import CallerDep, StateDep
from cds.service.errors import NotFound
from cds.service.schemas import FeedbackRequest

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/cds-services", tags=["feedback"])


@router.post("/{service_id}/feedback", name="feedback")
async def feedback(service_id: str, request: Request, state: StateDep, caller: CallerDep) -> JSONResponse:
    """Validate and store each item, linked to the card uuid and the rule that produced the card.

    Clients may resend feedback (the spec says to expect duplicates): a duplicate is acknowledged
    with 200 and stored once. An override given only as a code gets its display from the card's own
    ``overrideReasons``. Feedback on a card this service has no record of (another service's, or one
    from before the audit was kept) is stored, marked ``card_known = false`` with no rule, and the
    answer lists it under ``unknownCards``: refusing it would lose what the clinician did.
    """
    if service_id not in state.holder.current().catalog:
        raise NotFound(f"no CDS service {service_id!r}; GET /cds-services lists them")
    check_content_type(request)
    settings = state.settings
    payload = parse_json_body(await read_body(request, max_bytes=settings.max_body_bytes),
                              max_depth=settings.max_json_depth, max_magnitude=settings.max_number_magnitude)
    parsed = validate_or_400(FeedbackRequest, payload, what="feedback")
    outcome = await anyio.to_thread.run_sync(lambda: crud.record_feedback(
        sessions=state.sessions, service_id=service_id, items=parsed.feedback, client_iss=caller.iss))
    if outcome.unknown_cards:
        log.warning("feedback on %s for %d card(s) this service has no record of", service_id,
                    len(outcome.unknown_cards))
    answer: dict[str, object] = {"stored": outcome.stored, "duplicates": outcome.duplicates}
    if outcome.unknown_cards:
        answer["unknownCards"] = outcome.unknown_cards
    return JSONResponse(answer)
