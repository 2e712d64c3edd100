"""Remembering valid resources (cds.fhir.validation) never lets an invalid one through."""

from __future__ import annotations

import copy

import pytest

from cds._exceptions import InvalidResourceError
from cds.fhir.validation import validate_resource

from .conftest import FASTING_INSULIN, obs


def test_an_invalid_resource_fails_every_time_with_the_same_message() -> None:
    bad = obs(FASTING_INSULIN, 38, "uIU/mL", 20, rid="memo-bad")
    bad["status"] = 42
    messages = []
    for _ in range(2):
        with pytest.raises(InvalidResourceError) as exc:
            validate_resource(bad)
        messages.append(str(exc.value))
    assert messages[0] == messages[1] and "Observation/memo-bad" in messages[0] and "status" in messages[0]


def test_the_same_object_edited_after_a_pass_is_validated_again() -> None:
    """The memo is keyed by content, not identity: an edit in place is a new resource."""
    resource = obs(FASTING_INSULIN, 38, "uIU/mL", 20, rid="memo-edit")
    validate_resource(resource)
    validate_resource(copy.deepcopy(resource))  # same content: remembered, still fine
    resource["valueQuantity"]["value"] = "thirty-eight"
    with pytest.raises(InvalidResourceError, match="valueQuantity"):
        validate_resource(resource)
