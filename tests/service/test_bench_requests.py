"""The benchmark's requests (a whole Synthea bundle as one prefetch value) are valid service calls."""

from __future__ import annotations

import json

import pytest

from cds.service.bench_http import DEFAULT_BUNDLES, SERVICES, build_requests


@pytest.mark.parametrize("hook", list(SERVICES))
def test_a_synthea_bundle_as_prefetch_is_served(service, engine, hook):
    paths = sorted(DEFAULT_BUNDLES.glob("*.json"))
    if not paths:
        pytest.skip(f"no Synthea bundles in {DEFAULT_BUNDLES}")
    bundle = json.loads(paths[0].read_text(encoding="utf-8"))
    templates = service.state.holder.current().catalog[SERVICES[hook]].prefetch
    request = build_requests(bundle, hook, templates)
    response = service.client.post(f"/cds-services/{SERVICES[hook]}", json=request)
    assert response.status_code == 200, response.text
    direct = engine.evaluate(request, hook=hook).response.to_json()
    assert [c["source"]["topic"]["code"] for c in response.json()["cards"]] == [
        c["source"]["topic"]["code"] for c in direct["cards"]]
