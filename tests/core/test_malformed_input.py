"""Malformed input never crashes the engine: it is refused with an error naming the resource.

The fact builders read raw JSON before validating what they use, so a resource with the wrong shape
in a place they read (a string where FHIR has a list) must still end as InvalidResourceError, never a
TypeError. A seeded mutation run over the shipped samples guards the whole surface.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from cds._exceptions import CDSError, InputError, InvalidResourceError
from tests.core.conftest import FASTING_INSULIN, bundle, obs, patient

SAMPLES = Path(__file__).resolve().parents[2] / "fhir_samples"
JUNK: list[Any] = [None, 1, -5, 3.5, "", "x", [], {}, [1], {"a": 1}, True, "2026-13-45", {"coding": "x"}, [None]]


def test_a_code_of_the_wrong_shape_is_named(evaluate) -> None:
    bad = obs(FASTING_INSULIN, 38.0, "uIU/mL", 20)
    bad["code"]["coding"] = "27873-9"
    with pytest.raises(InvalidResourceError) as error:
        evaluate(bundle(bad, pt=patient(40)))
    assert error.value.resource == f"Observation/{bad['id']}"
    assert "code.coding" in str(error.value)


def test_a_contained_resource_of_unknown_type_is_named(evaluate) -> None:
    request = {"resourceType": "MedicationRequest", "id": "mr-x", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p"}, "contained": [{"resourceType": "abc", "id": "m"}],
               "medicationReference": {"reference": "#m"}}
    with pytest.raises(InvalidResourceError, match="MedicationRequest/mr-x"):
        evaluate(bundle(request, pt=patient(40, pid="p")))


def test_a_patient_id_that_is_not_a_string_is_named(evaluate) -> None:
    pt = patient(40)
    pt["id"] = 7
    with pytest.raises(InvalidResourceError, match="Patient/7"):
        evaluate(bundle(obs(FASTING_INSULIN, 38.0, "uIU/mL", 20), pt=pt))


def _paths(value: Any, path: tuple[Any, ...] = ()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, path + (index,))


def _mutate(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    document = copy.deepcopy(document)
    paths = [p for p in _paths(document) if p]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        parent: Any = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            if rng.random() < 0.3 and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = rng.choice(JUNK)
        except (KeyError, IndexError, TypeError):
            continue
    return document


def test_mutated_samples_give_a_response_or_an_input_error(engine) -> None:
    rng = random.Random(20261122)
    documents = [json.loads(p.read_text()) for p in sorted(SAMPLES.rglob("*.json"))]
    outcomes = {"cards": 0, "input error": 0}
    for _ in range(600):
        document = _mutate(rng.choice(documents), rng)
        try:
            engine.evaluate(document, hook=None if "hook" in document else "patient-view",
                            now="2026-11-01T09:00:00Z")
            outcomes["cards"] += 1
        except InputError:
            outcomes["input error"] += 1
        except CDSError as exc:  # EngineError / RulesetError would be our bug
            pytest.fail(f"{type(exc).__name__}: {exc}")
    assert outcomes["cards"] > 50 and outcomes["input error"] > 50, outcomes
