"""Screen accuracy against labels: the counts behind sensitivity, specificity and PPV."""

from __future__ import annotations

import pytest

from cds.population.accuracy import accuracy


def test_counts_and_ratios() -> None:
    labels = [
        {"patient_id": "a", "label": "sir-suspected"},
        {"patient_id": "b", "label": "sir-suspected;receptor-defect-pattern"},
        {"patient_id": "c", "label": "none"},
        {"patient_id": "d", "label": "none"},
        {"patient_id": "e", "label": "type-b-suspected"},
    ]
    worklist = [
        {"patient_id": "a", "rule_id": "sir-suspected"},
        {"patient_id": "c", "rule_id": "sir-suspected"},
        {"patient_id": "b", "rule_id": "receptor-defect-pattern"},
        {"patient_id": "d", "rule_id": "metformin-renal"},
    ]
    result = accuracy(labels, worklist)
    sir = result["sir-suspected"]
    assert (sir["tp"], sir["fp"], sir["fn"], sir["tn"]) == (1, 1, 1, 2)
    assert sir["sensitivity"] == 0.5 and sir["specificity"] == pytest.approx(0.6667) and sir["ppv"] == 0.5
    assert sir["missed_examples"] == ["b"] and sir["unplanted_examples"] == ["c"]
    assert result["receptor-defect-pattern"]["sensitivity"] == 1.0
    assert result["type-b-suspected"]["sensitivity"] == 0.0 and result["type-b-suspected"]["ppv"] is None
    assert result["lipodystrophy-pattern"]["sensitivity"] is None


def test_worklist_patient_missing_from_labels_is_an_error() -> None:
    with pytest.raises(ValueError, match="not in the labels"):
        accuracy([{"patient_id": "a", "label": "none"}], [{"patient_id": "z", "rule_id": "sir-suspected"}])
