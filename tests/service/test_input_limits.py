"""Bad input is always a 4xx with an OperationOutcome, never a 500, and never leaves engine state behind
(issue 10, item 4). Real uvicorn, real engine worker process (one), SQLite audit."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from cds.service.models import CallRecord

from svc_support import full_prefetch, hook_request, observation, patient_resources

SERVICE = "/cds-services/sir-patient-view"
JSON = {"content-type": "application/json"}


def _body(service, pid: str, **kwargs) -> dict:
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    return hook_request("patient-view", pid, prefetch=full_prefetch(templates, patient_resources(pid, **kwargs)))


def _row(service, hook_instance: str) -> CallRecord:
    with service.state.sessions() as session:
        (row,) = session.execute(select(CallRecord).where(CallRecord.hook_instance == hook_instance)).scalars().all()
        return row


def _issue(response) -> dict:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


@pytest.mark.parametrize("depth", [65, 600, 100_000])
def test_deep_nesting_is_a_400(service, depth):
    body = _body(service, "deep")
    raw = json.dumps(body)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    response = service.client.post(SERVICE, content=raw.encode(), headers=JSON)
    assert response.status_code == 400, response.text
    assert "nested deeper than 64 levels" in _issue(response)["diagnostics"]


def test_an_integer_over_4300_digits_is_a_400(service):
    raw = json.dumps(_body(service, "digits"))[:-1] + ', "big": ' + "9" * 5000 + "}"
    response = service.client.post(SERVICE, content=raw.encode(), headers=JSON)
    assert response.status_code == 400, response.text
    assert "number that cannot be read" in _issue(response)["diagnostics"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                          "application/json; charset=latin-1"])
def test_a_body_that_is_not_declared_json_is_a_415(service, content_type):
    body = _body(service, "ctype")
    response = service.client.post(SERVICE, content=json.dumps(body).encode(), headers={"content-type": content_type})
    assert response.status_code == 415, response.text
    assert _issue(response)["code"] == "not-supported"
    with service.state.sessions() as session:  # refused before the body was read: audited, without a body
        rows = session.execute(select(CallRecord).where(CallRecord.outcome == "unsupported-media-type")).scalars().all()
    assert rows and all(r.http_status == 415 and r.request is None for r in rows)


@pytest.mark.parametrize("content_type", ["application/json", "application/fhir+json",
                                          "application/json; charset=utf-8", "Application/FHIR+JSON; charset=UTF-8"])
def test_json_media_types_are_accepted(service, content_type):
    body = _body(service, "ctype-ok")
    response = service.client.post(SERVICE, content=json.dumps(body).encode(), headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert [c["source"]["topic"]["code"] for c in response.json()["cards"]] == ["sir-suspected"]


def test_the_default_body_limit_is_8_mib(service):
    assert service.state.settings.max_body_bytes == 8 * 1024 * 1024
    body = _body(service, "huge")
    body["extension"] = {"padding": "x" * (8 * 1024 * 1024)}
    response = service.client.post(SERVICE, json=body)
    assert response.status_code == 413, response.text
    assert _issue(response)["code"] == "too-costly"


@pytest.mark.parametrize("value", ["1e308", "-1e308", "1e400", "123456789012345678901234567890", "1e16"])
def test_numbers_the_engine_cannot_hold_are_refused_before_it_and_leave_nothing_behind(service, value):
    """durable_rules failed on 1e308 ("Could not assert fact, error code: 204") and then kept state (309):
    the value is now refused, naming where it is, and the same (single) worker answers the next call right."""
    pid = "huge-value"
    resources = patient_resources(pid)
    resources["Observation"].append(observation(pid, "huge-ins", "27873-9", 1.0, "uIU/mL", "u[IU]/mL"))
    templates = service.state.holder.current().catalog["sir-patient-view"].prefetch
    body = hook_request("patient-view", pid, prefetch=full_prefetch(templates, resources))
    raw = json.dumps(body).replace('"value": 1.0', f'"value": {value}')
    assert value in raw
    response = service.client.post(SERVICE, content=raw.encode(), headers=JSON)
    assert response.status_code == 400, response.text
    issue = _issue(response)
    assert issue["expression"] == ["prefetch.observations.entry[2].resource.valueQuantity.value"], issue
    assert _row(service, body["hookInstance"]).outcome == "bad-request"
    # the next calls on the same worker: the right cards for a patient who has them and one who has not
    assert service.state.holder.current().evaluator.size == 1
    for pid, insulin, expected in (("after-high", 40.0, ["sir-suspected"]), ("after-low", 8.0, [])):
        after = service.client.post(SERVICE, json=_body(service, pid, insulin=insulin))
        assert after.status_code == 200, after.text
        assert [c["source"]["topic"]["code"] for c in after.json()["cards"]] == expected


@pytest.mark.parametrize("url", [
    "https://ehr.example.org/fhir\r\nX-Injected: 1", "https://ehr.example.org/fhir\n", "https://ehr example.org/fhir",
    "https://ehr.example.org/fh\x00ir", "ftp://ehr.example.org/fhir", "https://user:pw@ehr.example.org/fhir",
    "https://ehr.example.org:99999/fhir", "https://ehr.example.org/fhir?_format=json", "https:///fhir",
    "https://ehr_example!.org/fhir", "//ehr.example.org/fhir",
])
def test_an_invalid_fhir_server_url_is_a_400_naming_the_field(service, url):
    body = _body(service, "bad-url")
    body["fhirServer"] = url
    response = service.client.post(SERVICE, json=body)
    assert response.status_code == 400, response.text
    assert _issue(response)["expression"] == ["fhirServer"]


def test_a_valid_fhir_server_url_keeps_working(service):
    body = _body(service, "good-url")
    body["fhirServer"] = "https://ehr.example.org:8443/fhir/R4/"
    response = service.client.post(SERVICE, json=body)  # everything prefetched: no fetch is made
    assert response.status_code == 200, response.text


def test_oversized_request_headers_get_431_with_an_operation_outcome(service):
    """Over CDS_MAX_HEADER_BYTES (8 KiB) and under uvicorn's h11 limit (16 KiB): the service's own answer.
    (Beyond h11's limit uvicorn answers a plain 400 before the application runs: documented in the README.)"""
    body = _body(service, "headers")
    response = service.client.post(SERVICE, json=body, headers={"authorization": "Bearer " + "a" * 10_000})
    assert response.status_code == 431, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    assert _issue(response)["code"] == "too-costly"
    ordinary = service.client.post(SERVICE, json=body, headers={"authorization": "Bearer " + "a" * 2_000})
    assert ordinary.status_code == 200  # open mode: the token is not looked at; a ~1 KiB JWT is far below
