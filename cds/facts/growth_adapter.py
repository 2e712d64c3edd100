"""Bridge from the fact builder to the BMI-for-age reference (``cds.facts.growth``).

Kept separate so the builder does not care whether a reference is installed: when none is, every
child gets ``None`` and the explanation says BMI-dependent rules were not evaluated (pathways.md 1).
"""

from __future__ import annotations

__all__ = ["bmi_z", "reference_name"]


def bmi_z(*, bmi: float, age_years: float, sex: str) -> float | None:
    try:
        from cds.facts import growth
    except ImportError:
        return None
    return growth.bmi_for_age_z(bmi=bmi, age_months=age_years * 12.0, sex=sex)


def reference_name() -> str | None:
    try:
        from cds.facts import growth
    except ImportError:
        return None
    return growth.REFERENCE_NAME
