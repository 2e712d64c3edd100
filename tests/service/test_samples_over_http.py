"""Every CDS Hooks request in fhir_samples/ is a valid request for the running service, which answers
with the same cards as the engine called directly.

The samples are what integrators copy; if the service refused one (a hookInstance that is not a UUID,
selections outside draftOrders...) the samples would teach the wrong thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.engine import Engine

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "fhir_samples" / "requests").glob("*.json"))
SERVICE_FOR_HOOK = {"patient-view": "sir-patient-view", "order-select": "sir-order-select", "order-sign": "sir-order-sign"}


def _cards(cards: list[dict]) -> list[tuple[str, str, str]]:
    return sorted((c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in cards)


def test_there_are_request_samples() -> None:
    assert len(SAMPLES) >= 60


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_request_is_served_like_the_engine(service, engine: Engine, path: Path) -> None:
    body = json.loads(path.read_text())
    response = service.client.post(f"/cds-services/{SERVICE_FOR_HOOK[body['hook']]}", json=body)
    assert response.status_code == 200, response.text
    direct = engine.evaluate(body).response.to_json()["cards"]  # the service's "now" is the current time too
    assert _cards(response.json()["cards"]) == _cards(direct)
