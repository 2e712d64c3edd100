"""Look-back windows and "latest value per concept" (pathways.md section 1, "Labs").

12 calendar months for eGFR, ALT, HbA1c, glucose, TG, weight, BMI, NYHA; 24 months for insulin,
C-peptide, leptin, adiponectin. Values dated after "now" do not exist yet. ``<lab>_last`` keeps the
latest value at any date so stale-value cards can show it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds.facts.labs import months_before

from .conftest import (
    ADIPONECTIN,
    ALT,
    BMI,
    EGFR,
    FASTING_INSULIN,
    GLUCOSE,
    HBA1C,
    HEIGHT,
    LEPTIN,
    NOW_DT,
    NYHA,
    SNOMED,
    TG,
    WEIGHT,
    bundle,
    obs,
)


def _at(loinc: str, value: float, unit: str, instant: str, **kw):
    o = obs(loinc, value, unit, **kw)
    o["effectiveDateTime"] = instant
    return o


# NOW is 2026-11-01T09:00:00Z
TWELVE_MONTHS = [
    ("egfr", EGFR, 50, "mL/min/{1.73_m2}"),
    ("alt", ALT, 30, "U/L"),
    ("hba1c", HBA1C, 6.0, "%"),
    ("triglycerides", TG, 2.0, "mmol/L"),
    ("weight", WEIGHT, 70, "kg"),
    ("bmi", BMI, 24, "kg/m2"),
]
TWENTY_FOUR_MONTHS = [
    ("fasting_insulin", FASTING_INSULIN, 20, "uIU/mL"),
    ("leptin", LEPTIN, 5, "ng/mL"),
    ("adiponectin", ADIPONECTIN, 5, "mg/L"),
]


@pytest.mark.parametrize(("fact", "loinc", "value", "unit"), TWELVE_MONTHS, ids=[t[0] for t in TWELVE_MONTHS])
def test_twelve_month_edge(facts, fact, loinc, value, unit) -> None:
    inside = facts(_at(loinc, value, unit, "2025-11-01T09:00:00Z"))  # exactly 12 calendar months
    assert inside.values[fact] == pytest.approx(value)
    outside = facts(_at(loinc, value, unit, "2025-10-31T09:00:00Z"))  # one day older
    assert outside.values[f"{fact}_known"] is False
    assert outside.values[f"{fact}_last"] == pytest.approx(value)  # stale value kept as _last
    assert outside.values[f"{fact}_last_days"] == 366


@pytest.mark.parametrize(("fact", "loinc", "value", "unit"), TWENTY_FOUR_MONTHS,
                         ids=[t[0] for t in TWENTY_FOUR_MONTHS])
def test_twenty_four_month_edge(facts, fact, loinc, value, unit) -> None:
    assert facts(_at(loinc, value, unit, "2024-11-01T09:00:00Z")).values[f"{fact}_known"] is True
    assert facts(_at(loinc, value, unit, "2025-01-15T00:00:00Z")).values[f"{fact}_known"] is True  # 21.5 months
    outside = facts(_at(loinc, value, unit, "2024-10-31T09:00:00Z"))
    assert outside.values[f"{fact}_known"] is False
    assert outside.values[f"{fact}_last_known"] is True


def test_insulin_window_is_not_twelve_months(facts) -> None:
    """An 18-month-old fasting insulin still counts (24 months), an 18-month-old eGFR does not."""
    result = facts(obs(FASTING_INSULIN, 30, "uIU/mL", 548), obs(EGFR, 50, "mL/min/{1.73_m2}", 548))
    assert result.values["fasting_insulin"] == 180.0
    assert result.values["egfr_known"] is False


def test_date_only_value_on_the_edge_day_with_midnight_now(engine) -> None:
    """With now = 2026-11-01 (a date), a value dated 2025-11-01 is exactly 12 months old and counts."""
    o = _at(EGFR, 50, "mL/min/{1.73_m2}", "2025-11-01")
    assert engine.evaluate(bundle(o), now="2026-11-01").facts.values["egfr"] == 50.0
    older = _at(EGFR, 50, "mL/min/{1.73_m2}", "2025-10-31")
    assert engine.evaluate(bundle(older), now="2026-11-01").facts.values["egfr_known"] is False


@pytest.mark.parametrize("instant", ["2026-11-01T09:01:00Z", "2026-11-02", "2027-01-01T00:00:00Z"])
def test_values_after_now_are_ignored(facts, instant) -> None:
    result = facts(_at(EGFR, 20, "mL/min/{1.73_m2}", instant, rid="future"),
                   obs(EGFR, 60, "mL/min/{1.73_m2}", 30, rid="past"))
    assert result.values["egfr"] == 60.0
    assert result.values["egfr_last"] == 60.0
    assert any(i.resource == "Observation/future" and "after the evaluation time" in i.reason
               for i in result.ignored)


def test_value_at_now_counts(facts) -> None:
    assert facts(_at(EGFR, 44, "mL/min/{1.73_m2}", "2026-11-01T09:00:00Z")).values["egfr"] == 44.0


def test_latest_value_wins_not_the_worst(facts) -> None:
    result = facts(
        obs(EGFR, 25, "mL/min/{1.73_m2}", 200, rid="older-low"),
        obs(EGFR, 70, "mL/min/{1.73_m2}", 10, rid="newest"),
        obs(EGFR, 40, "mL/min/{1.73_m2}", 100, rid="middle"),
    )
    assert result.values["egfr"] == 70.0
    assert result.labs["egfr"].resource == "Observation/newest"


def test_latest_wins_across_codes_of_one_concept(facts) -> None:
    """Two LOINC codes of eGFR (MDRD 33914-3, CKD-EPI 62238-1): one concept, the latest is used."""
    result = facts(obs(EGFR, 30, "mL/min/{1.73_m2}", 50), obs("62238-1", 48, "mL/min/{1.73_m2}", 5))
    assert result.values["egfr"] == 48.0


def test_stale_value_kept_as_last(facts) -> None:
    result = facts(obs(EGFR, 28, "mL/min/{1.73_m2}", 400, rid="stale"))
    assert result.values["egfr_known"] is False
    assert result.values["egfr_last"] == 28.0
    assert result.values["egfr_last_days"] == 400
    assert result.last_labs["egfr"].resource == "Observation/stale"
    assert "egfr" not in result.labs


def test_recent_and_last_differ_when_newer_value_is_stale_free(facts) -> None:
    result = facts(obs(EGFR, 28, "mL/min/{1.73_m2}", 400), obs(EGFR, 55, "mL/min/{1.73_m2}", 100))
    assert result.values["egfr"] == 55.0 and result.values["egfr_last"] == 55.0


def test_lowest_glucose_is_the_minimum_in_twelve_months(facts) -> None:
    result = facts(obs(GLUCOSE, 2.6, "mmol/L", 200), obs(GLUCOSE, 5.0, "mmol/L", 10),
                   obs(GLUCOSE, 1.9, "mmol/L", 400))
    assert result.values["lowest_glucose"] == 2.6  # the 400-day-old 1.9 is outside the window


def test_height_has_no_look_back(facts) -> None:
    result = facts(obs(HEIGHT, 160, "cm", 2000), obs(WEIGHT, 64, "kg", 10))
    assert result.values["height"] == pytest.approx(1.6)
    assert result.values["bmi"] == pytest.approx(25.0)


def test_observation_without_date_is_unreadable(facts) -> None:
    """v3 (pathways.md 1, Three states): a record exists, its date cannot be read: never "no eGFR"."""
    o = obs(EGFR, 50, "mL/min/{1.73_m2}", rid="undated")
    del o["effectiveDateTime"]
    result = facts(o)
    assert result.values["egfr_known"] is False
    assert result.values["egfr_unreadable"] is True
    assert result.unreadable["egfr"].resource == "Observation/undated"
    assert "no usable date" in result.unreadable["egfr"].reason


def test_effective_period_and_issued_are_dates(facts) -> None:
    by_period = obs(EGFR, 51, "mL/min/{1.73_m2}")
    del by_period["effectiveDateTime"]
    by_period["effectivePeriod"] = {"start": "2026-09-01T08:00:00Z", "end": "2026-09-01T10:00:00Z"}
    # v3 (pathways.md 1): effectivePeriod.start, not its end
    assert facts(by_period).labs["egfr"].date == datetime(2026, 9, 1, 8, tzinfo=UTC)
    by_issued = obs(EGFR, 52, "mL/min/{1.73_m2}")
    del by_issued["effectiveDateTime"]
    by_issued["issued"] = "2026-08-01T12:00:00Z"
    assert facts(by_issued).values["egfr"] == 52.0


def _nyha(klass_code: str, days_ago: float) -> dict:
    o = obs(NYHA, days_ago=days_ago)
    o["valueCodeableConcept"] = {"coding": [{"system": SNOMED, "code": klass_code}]}
    return o


def test_nyha_twelve_month_look_back(facts) -> None:
    assert facts(_nyha("420913000", 300)).values["nyha_class"] == 3
    assert facts(_nyha("420913000", 400)).values["nyha_class_known"] is False


@pytest.mark.parametrize(("now", "months", "expected"), [
    (datetime(2026, 11, 1, 9, tzinfo=UTC), 12, datetime(2025, 11, 1, 9, tzinfo=UTC)),
    (datetime(2026, 11, 1, 9, tzinfo=UTC), 24, datetime(2024, 11, 1, 9, tzinfo=UTC)),
    (datetime(2026, 3, 31, tzinfo=UTC), 1, datetime(2026, 2, 28, tzinfo=UTC)),  # day clamped
    (datetime(2028, 2, 29, tzinfo=UTC), 12, datetime(2027, 2, 28, tzinfo=UTC)),  # leap day
    (datetime(2026, 1, 15, tzinfo=UTC), 10, datetime(2025, 3, 15, tzinfo=UTC)),  # across a year
])
def test_months_before_is_calendar_months(now, months, expected) -> None:
    assert months_before(now, months) == expected


def test_now_fixture_is_what_the_edges_assume() -> None:
    assert NOW_DT == datetime(2026, 11, 1, 9, tzinfo=UTC)
