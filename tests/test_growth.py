"""BMI-for-age z-score (cds.facts.growth) against the shipped CDC 2000 table and its own percentiles."""

from __future__ import annotations

import csv
import hashlib
import math
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import pytest

from cds.facts import growth
from cds.facts.growth import REFERENCE_NAME, bmi_for_age_lms_z, bmi_for_age_z

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "rulesets" / "reference"
CSV_PATH = REFERENCE_DIR / "bmi_for_age_lms.csv"
# sha256 of CDC's bmiagerev.csv; also stated in rulesets/reference/README.md
CSV_SHA256 = "cbeea0e8d500ee15c652f3fdc45bcd02cb9c15d4d1e86f4d8048bbfea8d166e5"
SEX = {"1": "male", "2": "female"}
PERCENTILE_COLUMNS = {"P3": 0.03, "P5": 0.05, "P10": 0.10, "P25": 0.25, "P50": 0.50,
                      "P75": 0.75, "P85": 0.85, "P90": 0.90, "P95": 0.95, "P97": 0.97}
Z = NormalDist()


def _rows() -> list[dict[str, str]]:
    with CSV_PATH.open(newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["Sex"] != "Sex"]  # CDC repeats the header


ROWS = _rows()


def _row(sex: str, agemos: float) -> dict[str, float]:
    code = {"male": "1", "female": "2"}[sex]
    found = [r for r in ROWS if r["Sex"] == code and float(r["Agemos"]) == agemos]
    assert len(found) == 1
    return {k: float(v) for k, v in found[0].items()}


# --- the shipped reference ----------------------------------------------------------------------

def test_reference_file_is_cdc_bmiagerev_byte_for_byte():
    assert hashlib.sha256(CSV_PATH.read_bytes()).hexdigest() == CSV_SHA256
    assert CSV_SHA256 in (REFERENCE_DIR / "README.md").read_text()


def test_reference_covers_2_to_20_years_by_half_month_for_both_sexes():
    for code in ("1", "2"):
        ages = [float(r["Agemos"]) for r in ROWS if r["Sex"] == code]
        assert ages[0] == 24.0 and ages[1] == 24.5 and ages[-1] == 240.5
        assert len(ages) == 219
        assert all(0 < b - a <= 1.0 for a, b in zip(ages, ages[1:]))


def test_reference_name_names_cdc_and_the_extended_method():
    assert "CDC 2000" in REFERENCE_NAME and "extended" in REFERENCE_NAME


# --- LMS z-score ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sex,agemos", [("male", 24.0), ("male", 120.5), ("male", 215.5),
                                        ("female", 24.0), ("female", 96.5), ("female", 239.5)])
def test_reference_median_has_z_zero(sex, agemos):
    m = _row(sex, agemos)["M"]
    assert bmi_for_age_z(bmi=m, age_months=agemos, sex=sex) == pytest.approx(0.0, abs=1e-9)
    assert bmi_for_age_lms_z(bmi=m, age_months=agemos, sex=sex) == pytest.approx(0.0, abs=1e-9)


def test_every_table_percentile_up_to_p95_gives_its_normal_quantile():
    """At or below P95 the result is CDC 2000 unchanged: z(P5) = -1.645, z(P85) = 1.036, z(P95) = 1.645."""
    checked = 0
    for r in ROWS:
        agemos = float(r["Agemos"])
        if agemos >= growth.MAX_AGE_MONTHS:
            continue
        for column, p in PERCENTILE_COLUMNS.items():
            if p > 0.95:
                continue
            z = bmi_for_age_z(bmi=float(r[column]), age_months=agemos, sex=SEX[r["Sex"]])
            assert z == pytest.approx(Z.inv_cdf(p), abs=1e-5), (r["Sex"], agemos, column)
            checked += 1
    assert checked == 2 * 217 * 9  # ages 24.0, 24.5 .. 239.5


def test_plain_lms_z_of_p97_column_is_1_881():
    for r in ROWS:
        agemos = float(r["Agemos"])
        if agemos < growth.MAX_AGE_MONTHS:
            z = bmi_for_age_lms_z(bmi=float(r["P97"]), age_months=agemos, sex=SEX[r["Sex"]])
            assert z == pytest.approx(1.881, abs=5e-4)


def test_l_zero_uses_the_log_form():
    assert growth._lms_z(20.0, 0.0, 16.0, 0.1) == pytest.approx(math.log(20 / 16) / 0.1)
    # and the Box-Cox form tends to it as L -> 0
    assert growth._lms_z(20.0, 1e-9, 16.0, 0.1) == pytest.approx(math.log(20 / 16) / 0.1, rel=1e-6)


# --- interpolation between table ages -------------------------------------------------------------

def test_linear_interpolation_between_rows():
    lo, hi = _row("female", 130.5), _row("female", 131.5)
    bmi = 21.0
    for f in (0.25, 0.5, 0.9):
        age = 130.5 + f
        L, M, S = (lo[k] + f * (hi[k] - lo[k]) for k in ("L", "M", "S"))
        expected = ((bmi / M) ** L - 1) / (L * S)
        assert bmi_for_age_z(bmi=bmi, age_months=age, sex="female") == pytest.approx(expected, abs=1e-12)
    z_lo = bmi_for_age_z(bmi=bmi, age_months=130.5, sex="female")
    z_mid = bmi_for_age_z(bmi=bmi, age_months=131.0, sex="female")
    z_hi = bmi_for_age_z(bmi=bmi, age_months=131.5, sex="female")
    assert min(z_lo, z_hi) < z_mid < max(z_lo, z_hi)


def test_interpolated_median_has_z_zero_between_24_and_24_5_months():
    m = (_row("male", 24.0)["M"] + _row("male", 24.5)["M"]) / 2
    assert bmi_for_age_z(bmi=m, age_months=24.25, sex="male") == pytest.approx(0.0, abs=1e-12)


# --- above P95: CDC extended method --------------------------------------------------------------

def test_plain_lms_cannot_reach_plus_3_in_older_girls_but_the_extended_z_can():
    """Why the extended method: an 18-year-old girl with BMI 60 has LMS z < 3, i.e. would pass z <= +3."""
    lms = bmi_for_age_lms_z(bmi=60.0, age_months=216.5, sex="female")
    assert lms < 3.0
    assert bmi_for_age_z(bmi=60.0, age_months=216.5, sex="female") > 3.0


@pytest.mark.parametrize("sex,agemos", [("male", 24.0), ("male", 150.5), ("female", 72.5), ("female", 230.5)])
def test_extended_z_is_continuous_at_p95(sex, agemos):
    p95 = _row(sex, agemos)["P95"]
    below = bmi_for_age_z(bmi=p95 * (1 - 1e-9), age_months=agemos, sex=sex)
    above = bmi_for_age_z(bmi=p95 * (1 + 1e-9), age_months=agemos, sex=sex)
    assert below == pytest.approx(1.6448536, abs=1e-5)
    assert above == pytest.approx(1.6448536, abs=1e-5)


def test_extended_z_matches_the_half_normal_definition():
    """percentile = 90 + 10*Phi((BMI - P95)/sigma); sigma(age y) = 0.3728 + 0.5196a - 0.0091a^2 (boys)."""
    row = _row("male", 120.5)
    years = 120.5 / 12
    sigma = 0.3728 + 0.5196 * years - 0.0091 * years**2
    for bmi in (row["P97"], 30.0, 35.0):
        expected = Z.inv_cdf(0.90 + 0.10 * Z.cdf((bmi - row["P95"]) / sigma))
        assert bmi_for_age_z(bmi=bmi, age_months=120.5, sex="male") == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("sex,agemos,bmi,expected", [
    # pinned values; an independent implementation (rcpchgrowth 4.6.5, CDC reference) agrees within 2e-4
    ("male", 120.5, 30.0, 2.600293),
    ("female", 204.5, 40.0, 2.484819),
    ("male", 24.0, 22.0, 2.788381),
    ("female", 180.5, 33.0, 2.024500),
    ("male", 60.5, 25.0, 3.275466),
])
def test_extended_z_pinned_values(sex, agemos, bmi, expected):
    assert bmi_for_age_z(bmi=bmi, age_months=agemos, sex=sex) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("sex", ["male", "female"])
@pytest.mark.parametrize("agemos", [24.0, 30.25, 96.5, 150.0, 200.5, 239.9])
def test_strictly_increasing_in_bmi(sex, agemos):
    bmis = [10.0 + 0.25 * i for i in range(241)]  # 10 .. 70 kg/m2
    zs = [bmi_for_age_z(bmi=b, age_months=agemos, sex=sex) for b in bmis]
    assert all(b > a for a, b in zip(zs, zs[1:]))
    assert zs[-1] > 3.0


def test_absurd_bmi_saturates_instead_of_failing():
    """Beyond ~38 sigma above P95 (BMI > ~72 at age 2) the tail underflows: z stays at its ceiling."""
    zs = [bmi_for_age_z(bmi=b, age_months=24.0, sex="male") for b in (70.0, 80.0, 200.0, 1000.0)]
    assert all(math.isfinite(z) and z > 30 for z in zs)
    assert all(b >= a for a, b in zip(zs, zs[1:]))


# --- where there is no reference -----------------------------------------------------------------

@pytest.mark.parametrize("age", [0.0, 12.0, 23.99, 240.0, 240.5, 300.0, -1.0])
def test_none_outside_2_to_20_years(age):
    assert bmi_for_age_z(bmi=18.0, age_months=age, sex="male") is None
    assert bmi_for_age_lms_z(bmi=18.0, age_months=age, sex="female") is None


def test_bounds_of_the_age_range_are_evaluated():
    assert bmi_for_age_z(bmi=18.0, age_months=24.0, sex="female") is not None
    assert bmi_for_age_z(bmi=18.0, age_months=239.99, sex="female") is not None


@pytest.mark.parametrize("sex", ["other", "unknown", "", "m", "F", None])
def test_none_for_sex_without_a_reference(sex):
    assert bmi_for_age_z(bmi=18.0, age_months=100.0, sex=sex) is None


def test_sex_is_case_insensitive():
    assert bmi_for_age_z(bmi=18.0, age_months=100.0, sex="Male") == bmi_for_age_z(
        bmi=18.0, age_months=100.0, sex="male")
    assert bmi_for_age_z(bmi=18.0, age_months=100.0, sex=" FEMALE ") == bmi_for_age_z(
        bmi=18.0, age_months=100.0, sex="female")


@pytest.mark.parametrize("bmi", [0.0, -5.0, float("nan"), float("inf")])
def test_invalid_bmi_is_a_caller_error(bmi):
    with pytest.raises(ValueError):
        bmi_for_age_z(bmi=bmi, age_months=100.0, sex="male")


def test_invalid_age_is_a_caller_error():
    with pytest.raises(ValueError):
        bmi_for_age_z(bmi=18.0, age_months=float("nan"), sex="male")


def test_reference_is_found_from_any_working_directory(tmp_path):
    """The table is read relative to the source tree, not the cwd (works for `pip install -e .`)."""
    code = "from cds.facts.growth import bmi_for_age_z; print(bmi_for_age_z(bmi=16.57502768, age_months=24, sex='male'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert abs(float(out.stdout)) < 1e-9
