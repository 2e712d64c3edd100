"""Sensitivity, specificity and PPV of a screen's worklist against a generated population's labels.

Truth is the labels file of ``cds population generate``: a patient is positive for a pathway when it
was planted from a sample whose manifest expects that pathway's card. A patient labelled ``none`` was
not planted with it; an ordinary (Synthea) patient who still gets the card counts as a false
positive here, although it may be a true finding of the rules: read specificity and PPV with that in
mind (the worklist row says why the card fired).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SCREENED_PATHWAYS", "accuracy", "accuracy_from_files"]

#: The recognition rules whose screen accuracy the benchmark reports (issue 11 item 7).
SCREENED_PATHWAYS = ("sir-suspected", "lipodystrophy-pattern", "receptor-defect-pattern", "type-b-suspected")


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def accuracy(labels: Iterable[Mapping[str, str]], worklist: Iterable[Mapping[str, Any]],
             pathways: Iterable[str] = SCREENED_PATHWAYS) -> dict[str, dict[str, Any]]:
    """Per pathway: tp, fp, fn, tn, sensitivity, specificity, ppv (None when undefined), and up to
    five patient ids of each kind of miss (for review)."""
    truth: dict[str, set[str]] = {}
    patients: list[str] = []
    for row in labels:
        pid = row["patient_id"]
        patients.append(pid)
        truth[pid] = {label for label in row["label"].split(";") if label and label != "none"}
    carded: dict[str, set[str]] = {}
    for row in worklist:
        carded.setdefault(str(row["rule_id"]), set()).add(str(row["patient_id"]))
    known = set(patients)
    out: dict[str, dict[str, Any]] = {}
    for pathway in pathways:
        predicted = carded.get(pathway, set())
        unknown = predicted - known
        if unknown:
            raise ValueError(f"worklist patients not in the labels file: {sorted(unknown)[:5]}")
        positive = {pid for pid in patients if pathway in truth[pid]}
        tp, fp = len(predicted & positive), len(predicted - positive)
        fn = len(positive - predicted)
        tn = len(patients) - tp - fp - fn
        out[pathway] = {
            "planted": len(positive), "carded": len(predicted), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp),
            "missed_examples": sorted(positive - predicted)[:5], "unplanted_examples": sorted(predicted - positive)[:5],
        }
    return out


def accuracy_from_files(labels_csv: Path, worklist_csv: Path,
                        pathways: Iterable[str] = SCREENED_PATHWAYS) -> dict[str, dict[str, Any]]:
    """:func:`accuracy` on ``labels.csv`` (generator) and ``worklist.csv`` (screen)."""
    with labels_csv.open(encoding="utf-8", newline="") as lf, worklist_csv.open(encoding="utf-8", newline="") as wf:
        return accuracy(csv.DictReader(lf), csv.DictReader(wf), pathways)
