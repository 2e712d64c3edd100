"""Fasting insulin (pathways.md section 1): LOINC 27873-9, or another insulin code whose text/display
says "fasting". A random insulin (20448-7 without "fasting") never counts against 150 pmol/L."""

from __future__ import annotations

import pytest

from .conftest import BMI, FASTING_INSULIN, INSULIN_RANDOM, bundle, obs, patient


def test_27873_9_counts(facts) -> None:
    assert facts(obs(FASTING_INSULIN, 38, "uIU/mL", 20)).values["fasting_insulin"] == 228.0


@pytest.mark.parametrize(("text", "display"), [
    ("Fasting insulin", None),
    ("Insulin (fasting)", None),
    (None, "Insulin [Units/volume] in Serum or Plasma --fasting"),
    ("INSULIN, FASTING", "Insulin [Units/volume] in Serum or Plasma"),
])
def test_20448_7_counts_when_text_or_display_says_fasting(facts, text, display) -> None:
    result = facts(obs(INSULIN_RANDOM, 38, "uIU/mL", 20, text=text, display=display))
    assert result.values["fasting_insulin"] == 228.0


@pytest.mark.parametrize(("text", "display"), [
    (None, None),
    ("Insulin", "Insulin [Units/volume] in Serum or Plasma"),
    ("Insulin, random", None),
    ("Insulin, non-fasting", None),
    ("Non fasting insulin", None),
])
def test_20448_7_without_fasting_never_counts(facts, text, display) -> None:
    result = facts(obs(INSULIN_RANDOM, 60, "uIU/mL", 20, text=text, display=display))
    assert result.values["fasting_insulin_known"] is False
    assert result.values["fasting_insulin_last_known"] is False


def test_random_insulin_never_fires_sir_suspected(evaluate) -> None:
    """Random insulin 360 pmol/L in a lean adult without diabetes: no card."""
    payload = bundle(obs(INSULIN_RANDOM, 60, "uIU/mL", 20, display="Insulin [Units/volume] in Serum or Plasma"),
                     obs(BMI, 22, "kg/m2", 20), pt=patient(35))
    result = evaluate(payload)
    assert "sir-suspected" not in result.matched
    assert result.cards == []


def test_control_fasting_text_on_20448_7_fires_sir_suspected(evaluate) -> None:
    payload = bundle(obs(INSULIN_RANDOM, 60, "uIU/mL", 20, text="Fasting insulin"),
                     obs(BMI, 22, "kg/m2", 20), pt=patient(35))
    result = evaluate(payload)
    assert "sir-suspected" in result.matched


def test_random_insulin_does_not_shadow_an_older_fasting_value(facts) -> None:
    result = facts(obs(INSULIN_RANDOM, 10, "uIU/mL", 5), obs(FASTING_INSULIN, 30, "uIU/mL", 100, rid="fasting"))
    assert result.values["fasting_insulin"] == 180.0
    assert result.labs["fasting_insulin"].resource == "Observation/fasting"


def test_latest_of_both_fasting_forms_wins(facts) -> None:
    result = facts(obs(FASTING_INSULIN, 30, "uIU/mL", 100), obs(INSULIN_RANDOM, 20, "uIU/mL", 5, text="Fasting insulin"))
    assert result.values["fasting_insulin"] == 120.0


@pytest.mark.parametrize(("uiu", "fires"), [(25.0, False), (25.1, True)])
def test_threshold_is_strictly_above_150_pmol_per_l(evaluate, uiu, fires) -> None:
    """25 uIU/mL = exactly 150 pmol/L does not exceed the threshold; 25.1 (150.6) does."""
    payload = bundle(obs(FASTING_INSULIN, uiu, "uIU/mL", 20), obs(BMI, 22, "kg/m2", 20), pt=patient(35))
    assert ("sir-suspected" in evaluate(payload).matched) is fires
