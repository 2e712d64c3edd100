"""Stage 1 drops only patients who get no card (issue 11, "two stages, derived from the rules").

The first pass is derived from the loaded rules (their conditions in normal form, the value sets
that feed each fact); the proof is empirical and could fail: every patient it sets aside is evaluated
fully anyway (all their records the engine reads, through the same
core as the screen) and must get no card. The population has many such patients (the 40 Synthea
records stripped of what the rules read: encounters, immunisations, vital signs, unrelated
conditions), and the samples, which fire cards, must all be kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cds.engine import Engine
from cds.rules.loader import load_ruleset
from cds.screen.buckets import partition
from cds.screen.core import screen_patient
from cds.screen.ingest import discover
from cds.screen.prefilter import Prefilter

from .conftest import SamplesExport, synthea_files
from .exports import NOW, SYNTHEA


def _proof(input_path: Path, workdir: Path, engine: Engine) -> tuple[int, int, int]:
    """(patients, dropped, cards of the dropped when evaluated fully)."""
    part = partition(discover(input_path), Prefilter(engine.ruleset), workdir, buckets=7)
    dropped_cards = 0
    dropped = 0
    for patient in part.iter_patients(selected_only=False):
        if patient.patient_id in part.selected:
            continue
        dropped += 1
        rows = screen_patient(patient, NOW, engine)
        assert rows == [], (patient.patient_id, [r.summary for r in rows])
        dropped_cards += len(rows)
    assert dropped == part.dropped  # every dropped patient was evaluated (all have a Patient line)
    return part.patients, dropped, dropped_cards


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_ruleset())


def test_every_patient_dropped_by_the_first_pass_gets_no_card(samples_export: SamplesExport, tmp_path: Path,
                                                               engine: Engine) -> None:
    patients, dropped, cards = _proof(samples_export.folder, tmp_path / "buckets", engine)
    assert cards == 0
    assert dropped >= len(samples_export.stripped) >= 30, "the proof needs patients to drop"
    assert patients == len(samples_export.expected_patients) + len(samples_export.stripped)


def test_the_first_pass_keeps_every_patient_a_rule_fires_for(samples_export: SamplesExport, tmp_path: Path) -> None:
    part = partition(discover(samples_export.folder), Prefilter(load_ruleset()), tmp_path / "b")
    assert set(samples_export.stripped).isdisjoint(part.selected)
    from .test_equivalence import evaluate_cards

    for pid, request in samples_export.expected_patients.items():
        if evaluate_cards(request):
            assert pid in part.selected, pid


def test_the_first_pass_follows_the_value_sets(tmp_path: Path) -> None:
    """Derived from the rulesets, not a hand-written list: remove a value set and its records stop counting."""
    import shutil

    from cds.rules.loader import default_rulesets_dir

    metformin = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
                 "subject": {"reference": "Patient/p1"},
                 "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                           "code": "861007", "display": "metformin 500 MG Oral Tablet"}]}}
    assert Prefilter(load_ruleset()).readable(metformin)
    copy = tmp_path / "rulesets"
    shutil.copytree(default_rulesets_dir(), copy)
    ruleset = load_ruleset(copy, strict=False)
    trimmed = {k: v for k, v in ruleset.valuesets.items() if k != "metformin"}
    ruleset.valuesets = trimmed
    assert not Prefilter(ruleset).readable(metformin)


def test_synthea_patients_set_aside_get_no_card(tmp_path: Path, engine: Engine) -> None:
    """Bundle input: Synthea patients with nothing a card needs (e.g. no SIR context, no drug a safety
    rule watches) are set aside, and each of them, evaluated fully, gets no card."""
    if not synthea_files():
        pytest.skip(f"{SYNTHEA} not available")
    patients, dropped, cards = _proof(SYNTHEA, tmp_path / "b", engine)
    assert patients == 40 and cards == 0
    assert 0 < dropped < 40


def test_the_first_pass_follows_the_rule_conditions() -> None:
    """A BMI alone can make no card fire; a fasting insulin with a BMI can (sir-suspected), a metformin
    prescription can (the metformin safety rules), an unreadable concept always goes to the full pass."""
    from cds.screen.prefilter import ANY

    prefilter = Prefilter(load_ruleset())
    assert not prefilter.selects_everyone
    assert not prefilter.selects({"bmi"})
    assert not prefilter.selects({"bmi", "hba1c", "egfr"})  # an ordinary record with labs
    assert prefilter.selects({"insulin-fasting", "bmi"})
    assert prefilter.selects({"metformin"})
    assert prefilter.selects({"lipodystrophy-partial"})
    assert prefilter.selects({ANY})
    malformed = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p"}, "code": {"coding": "E11"}}
    assert prefilter.classes(malformed) == {ANY}


def test_a_device_named_as_an_insulin_pump_counts() -> None:
    prefilter = Prefilter(load_ruleset())
    pump = {"resourceType": "Device", "id": "d", "status": "active", "patient": {"reference": "Patient/p"},
            "deviceName": [{"name": "Insulin pump", "type": "user-friendly-name"}]}
    assert "insulin-pump" in prefilter.classes(pump)
