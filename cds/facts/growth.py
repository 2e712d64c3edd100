"""BMI-for-age z-score for children aged 2 to <20 years (CDC 2000 reference, CDC 2022 extended method).

Why: pathways.md section 1 ("Adults") replaces the adult BMI < 30 criterion, from age 2 to 17, by a
BMI-for-age z-score <= +3 against a reference shipped with the project. The reference is the CDC 2000
BMI-for-age LMS table (``rulesets/reference/bmi_for_age_lms.csv``, byte-identical to CDC's
``bmiagerev.csv``; origin, licence and checksums in ``rulesets/reference/README.md``). No WHO 2007
(5-19 y) table is available to the project under a non-copyleft licence, so the reference is CDC only.

Why not plain LMS above the 95th percentile: with the CDC 2000 parameters, L is strongly negative, so
the LMS z-score is bounded above by -1/(L*S). From about 7 to 12 years (boys) and past 17 years
(girls) that bound is close to or below +3: a 10-year-old boy would need a BMI of ~130 kg/m2 to
reach LMS z = +3, and no BMI gives a 17.5-year-old girl z = +3. A "z <= +3" rule on plain LMS z would
therefore pass every child with severe obesity. CDC itself says extrapolating beyond the 97th
percentile compresses z-scores and recommends the *extended* method instead:
source: Wei R, Ogden CL, Parsons VL, Freedman DS, Hales CM. A method for calculating BMI z-scores
and percentiles above the 95th percentile of the CDC growth charts. Ann Hum Biol 2020;47(6):514-521;
CDC/NCHS, CDC Extended BMI-for-Age Growth Charts (2022), data file bmi-age-2022.csv and SAS program.

So :func:`bmi_for_age_z` returns
- the plain LMS z-score at or below the 95th percentile (identical to CDC 2000, so the 85th/95th
  percentile cut-offs and all z <= 1.645 are unchanged), and
- above the 95th percentile, the extended z-score: BMI above P95 follows a half-normal distribution
  with scale ``sigma(age, sex)``; percentile = 90 + 10 * Phi((BMI - P95) / sigma), z = Phi^-1(percentile).
  It is continuous at P95 (z = 1.645 there) and strictly increasing in BMI, without the ceiling.
:func:`bmi_for_age_lms_z` returns the plain LMS z-score (for comparison and tests; do not use it for
the z <= +3 rule).
"""

from __future__ import annotations

import bisect
import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

from cds.resources import builtin_rulesets_dir

__all__ = [
    "MAX_AGE_MONTHS",
    "MIN_AGE_MONTHS",
    "REFERENCE_NAME",
    "REFERENCE_PATH",
    "bmi_for_age_lms_z",
    "bmi_for_age_z",
]

REFERENCE_NAME = "CDC 2000 BMI-for-age (extended method above the 95th percentile, CDC 2022)"
"""Shown in card details and explanations next to the z-score."""

# The table lives in the rulesets' data folder (rulesets/reference/) so an informatician can read and
# replace it; it ships as package data and is found with importlib.resources (cds.resources).
REFERENCE_PATH = builtin_rulesets_dir() / "reference" / "bmi_for_age_lms.csv"

# source: CDC 2000 growth charts, BMI-for-age is defined from 2 to 20 years (bmiagerev.csv rows
# Agemos 24 .. 240.5). The upper bound is exclusive: at 240 months (20 y) the child is an adult.
MIN_AGE_MONTHS = 24.0
MAX_AGE_MONTHS = 240.0

_SEX_CODES = {"male": 1, "female": 2}  # CDC file: Sex 1 = male, 2 = female

_NORMAL = NormalDist()
_Z95 = _NORMAL.inv_cdf(0.95)  # 1.6448536...; the CDC table's P95 column is M*(1+L*S*_Z95)**(1/L)

# Scale of the half-normal above P95, a quadratic in age in years fitted by CDC.
# source: Wei et al. 2020 (above); CDC bmi-age-2022.csv `sigma` column equals these polynomials.
_SIGMA_COEFFICIENTS = {
    1: (0.3728, 0.5196, -0.0091),  # male
    2: (0.8334, 0.3712, -0.0011),  # female
}


@dataclass(frozen=True)
class _Row:
    age_months: float
    L: float
    M: float
    S: float


@lru_cache(maxsize=1)
def _table() -> dict[int, tuple[list[float], list[_Row]]]:
    """Read the CDC file once: per sex code, the sorted ages and their LMS rows.

    The CDC file repeats its header line before the female rows; such lines are skipped. Raises
    FileNotFoundError when the reference is not shipped and ValueError when it is malformed: a
    broken reference is a packaging fault, never a reason to skip children silently.
    """
    rows: dict[int, list[_Row]] = {1: [], 2: []}
    with REFERENCE_PATH.open(newline="", encoding="ascii") as handle:
        for record in csv.reader(handle):
            if not record or record[0].strip() == "Sex":
                continue
            try:
                sex = int(record[0])
                row = _Row(float(record[1]), float(record[2]), float(record[3]), float(record[4]))
            except (IndexError, ValueError) as exc:
                raise ValueError(f"{REFERENCE_PATH}: unreadable row {record!r}") from exc
            if sex not in rows:
                raise ValueError(f"{REFERENCE_PATH}: unknown sex code {sex!r}")
            rows[sex].append(row)
    table: dict[int, tuple[list[float], list[_Row]]] = {}
    for sex, sex_rows in rows.items():
        sex_rows.sort(key=lambda r: r.age_months)
        ages = [r.age_months for r in sex_rows]
        if not ages or ages[0] > MIN_AGE_MONTHS or ages[-1] < MAX_AGE_MONTHS:
            raise ValueError(f"{REFERENCE_PATH}: sex {sex} does not cover {MIN_AGE_MONTHS}-{MAX_AGE_MONTHS} months")
        if any(b <= a for a, b in zip(ages, ages[1:])):
            raise ValueError(f"{REFERENCE_PATH}: sex {sex} has duplicate or unsorted ages")
        table[sex] = (ages, sex_rows)
    return table


def _lms_at(sex_code: int, age_months: float) -> tuple[float, float, float]:
    """L, M, S at an exact age: linear interpolation between the two bracketing table ages."""
    ages, rows = _table()[sex_code]
    i = bisect.bisect_left(ages, age_months)
    if ages[i] == age_months:
        r = rows[i]
        return r.L, r.M, r.S
    lo, hi = rows[i - 1], rows[i]
    f = (age_months - lo.age_months) / (hi.age_months - lo.age_months)
    return (
        lo.L + f * (hi.L - lo.L),
        lo.M + f * (hi.M - lo.M),
        lo.S + f * (hi.S - lo.S),
    )


def _sex_code(sex: str) -> int | None:
    return _SEX_CODES.get(sex.strip().lower()) if isinstance(sex, str) else None


def _check_inputs(bmi: float, age_months: float) -> None:
    if not (isinstance(bmi, (int, float)) and math.isfinite(bmi) and bmi > 0):
        raise ValueError(f"bmi must be a positive finite number in kg/m2, got {bmi!r}")
    if not (isinstance(age_months, (int, float)) and math.isfinite(age_months)):
        raise ValueError(f"age_months must be a finite number, got {age_months!r}")


def _lms_z(bmi: float, L: float, M: float, S: float) -> float:
    if L == 0:
        return math.log(bmi / M) / S
    return ((bmi / M) ** L - 1) / (L * S)


def _lookup(bmi: float, age_months: float, sex: str) -> tuple[int, float, float, float] | None:
    _check_inputs(bmi, age_months)
    code = _sex_code(sex)
    if code is None or not (MIN_AGE_MONTHS <= age_months < MAX_AGE_MONTHS):
        return None
    return (code, *_lms_at(code, age_months))


def bmi_for_age_lms_z(*, bmi: float, age_months: float, sex: str) -> float | None:
    """Plain CDC 2000 LMS z-score, z = ((bmi/M)**L - 1)/(L*S), or ln(bmi/M)/S when L == 0.

    Exact for percentiles 3-97 (the table's own P-columns give z = Phi^-1(p)), but compressed above
    the 97th percentile (see the module docstring): use :func:`bmi_for_age_z` for clinical rules.
    Returns None in the same cases as :func:`bmi_for_age_z`.
    """
    found = _lookup(bmi, age_months, sex)
    if found is None:
        return None
    _, L, M, S = found
    return _lms_z(bmi, L, M, S)


def bmi_for_age_z(*, bmi: float, age_months: float, sex: str) -> float | None:
    """BMI-for-age z-score against the CDC 2000 reference, CDC 2022 extended method above P95.

    At or below the 95th percentile: the LMS z-score, z = ((bmi/M)**L - 1)/(L*S) (ln(bmi/M)/S when
    L == 0), with L, M, S interpolated linearly between the table's ages (half-month steps).
    Above it: z = Phi^-1(0.90 + 0.10 * Phi((bmi - P95)/sigma)), P95 = M*(1 + L*S*1.645)**(1/L),
    sigma = CDC's quadratic in age (years) by sex. Computed through the upper tail (erfc) so it keeps
    rising for extreme BMIs; it only saturates (~ +37) where a double cannot hold the tail any more.

    Returns None, meaning "no reference: the child is not evaluated by BMI-dependent rules" (the
    caller's explanation should say so and name :data:`REFERENCE_NAME`):
    - age_months < 24 or >= 240: the CDC BMI-for-age reference starts at 2 years (no BMI-for-age
      chart under 2 y; WHO weight-for-length is used there) and ends at 20 years (adult);
    - sex other than "male"/"female" (case-insensitive; e.g. FHIR "other", "unknown"): the
      reference is sex-specific and choosing either table would be a guess.
    Raises ValueError for a non-finite or non-positive BMI or a non-finite age (a caller bug: BMI is
    normalised to kg/m2 before it reaches here).
    """
    found = _lookup(bmi, age_months, sex)
    if found is None:
        return None
    code, L, M, S = found
    z = _lms_z(bmi, L, M, S)
    if z <= _Z95:
        return z
    p95 = M * (1 + L * S * _Z95) ** (1 / L) if L != 0 else M * math.exp(S * _Z95)
    a0, a1, a2 = _SIGMA_COEFFICIENTS[code]
    years = age_months / 12
    sigma = a0 + a1 * years + a2 * years * years
    # upper tail of the extended percentile: 1 - (0.90 + 0.10*Phi(x)) = 0.10 * Phi(-x)
    tail = 0.10 * 0.5 * math.erfc((bmi - p95) / sigma / math.sqrt(2))
    tail = max(tail, 5e-324)  # BMI so extreme that the tail underflows: saturate instead of failing
    return -_NORMAL.inv_cdf(tail)
