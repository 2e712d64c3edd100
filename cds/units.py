"""Unit normalisation: every measured value is converted to one canonical unit per quantity.

Why a table and not a UCUM library: the rules compare a handful of laboratory quantities whose
conversions are fixed by the clinical catalogue (pathways.md section 1); a small explicit table keeps
each factor visible next to its source and lets an informatician see exactly what is accepted. A
unit not in the table is *not convertible*: the value is ignored and the explanation says so; it is
never compared raw.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "CANONICAL_UNITS", "UnitError", "accepted_units", "canonical_unit", "convert", "normalise_unit_text",
]


class UnitError(ValueError):
    """Raised when a value's unit cannot be converted to the quantity's canonical unit."""


def normalise_unit_text(unit: str | None) -> str:
    """Fold the spellings EHRs use for one unit into one key (case, micro signs, spaces, braces)."""
    if unit is None:
        return ""
    text = unit.strip().replace("µ", "u").replace("μ", "u").replace("²", "2")
    text = re.sub(r"\s+", "", text).lower()
    # pathways.md 1: the micro prefix is also written "mc" or "micro" (mcIU/mL, microU/mL, mcg/L);
    # only at the start of a unit term, so "mmol" or "/mL" are never touched
    return _MICRO_WORD.sub(r"\1u", text)


_MICRO_WORD = re.compile(r"(^|[/(\[.*])(?:micro|mc)(?=[a-z\[])")


@dataclass(frozen=True)
class _Conversion:
    to_canonical: Callable[[float], float]
    source: str


def _factor(f: float, source: str) -> _Conversion:
    return _Conversion(lambda v: v * f, source)


_IDENTITY = "identity"

# quantity -> canonical unit. Sources: pathways.md section 1 (the clinical contract).
CANONICAL_UNITS: dict[str, str] = {
    "insulin": "pmol/L",
    "c_peptide": "nmol/L",
    "triglycerides": "mmol/L",
    "glucose": "mmol/L",
    "hba1c": "%",
    "egfr": "mL/min/{1.73_m2}",
    "alt": "U/L",
    "leptin": "ng/mL",
    "adiponectin": "mg/L",
    "weight": "kg",
    "height": "m",
    "bmi": "kg/m2",
    "insulin_dose": "U",
    "lvef": "%",
    "hcg": "[IU]/L",
}

_INSULIN_UIU = _factor(6.0, "pathways.md 1: uIU/mL x 6.0 = pmol/L (ARUP; sir-clinical-brief SIR-1 [V])")

# quantity -> {normalised unit text -> conversion}
_TABLE: dict[str, dict[str, _Conversion]] = {
    "insulin": {
        "pmol/l": _factor(1.0, _IDENTITY),
        # pathways.md 1 (v3): uIU/mL = uU/mL = mcIU/mL = microIU/mL = microU/mL = u[IU]/mL = mU/L =
        # mIU/L = m[IU]/L (mc/micro folded to u by normalise_unit_text). IU/L is NOT among them: it
        # is 1000 x larger, and an insulin written in IU/L is more likely a mislabel than a real
        # value, so it is unreadable rather than converted (it was wrongly x 6.0 before v3).
        "uiu/ml": _INSULIN_UIU,
        "u[iu]/ml": _INSULIN_UIU,
        "uu/ml": _INSULIN_UIU,
        "miu/l": _INSULIN_UIU,
        "mu/l": _INSULIN_UIU,
        "m[iu]/l": _INSULIN_UIU,
        "uiu/l": _factor(6.0 / 1000.0, "uIU/L = 1/1000 uIU/mL"),
    },
    "c_peptide": {
        "nmol/l": _factor(1.0, _IDENTITY),
        "pmol/l": _factor(0.001, "SI prefix"),
        "ng/ml": _factor(0.33, "sir-clinical-brief SIR-1: ng/mL x 0.33 = nmol/L [V ARUP]"),
    },
    "triglycerides": {
        "mmol/l": _factor(1.0, _IDENTITY),
        "mg/dl": _Conversion(lambda v: v / 88.57, "pathways.md 1: mg/dL / 88.57"),
    },
    "glucose": {
        "mmol/l": _factor(1.0, _IDENTITY),
        "mg/dl": _Conversion(lambda v: v / 18.0, "pathways.md 1: mg/dL / 18.0"),
    },
    "hba1c": {
        "%": _factor(1.0, _IDENTITY),
        "%{hemoglobin}": _factor(1.0, _IDENTITY),
        "%hba1c": _factor(1.0, _IDENTITY),
        "%{hba1c}": _factor(1.0, _IDENTITY),
        "mmol/mol": _Conversion(
            lambda v: 0.0915 * v + 2.15, "pathways.md 1: NGSP % = 0.0915 x IFCC mmol/mol + 2.15"
        ),
        "mmol/mol{hb}": _Conversion(lambda v: 0.0915 * v + 2.15, "pathways.md 1"),
    },
    "egfr": {
        # Only per-1.73 m2 units are eGFR. Plain mL/min (creatinine clearance, as Synthea records
        # under eGFR codes) is deliberately absent: codes.md section E.
        "ml/min/{1.73_m2}": _factor(1.0, _IDENTITY),
        "ml/min/1.73m2": _factor(1.0, _IDENTITY),
        "ml/min/1.73_m2": _factor(1.0, _IDENTITY),
        "ml/min/{1.73m2}": _factor(1.0, _IDENTITY),
        "ml/min/1.73.m2": _factor(1.0, _IDENTITY),
        "ml/min/1.73sqm": _factor(1.0, _IDENTITY),
        "ml/min/1.73m^2": _factor(1.0, _IDENTITY),
    },
    "alt": {
        "u/l": _factor(1.0, _IDENTITY),
        "iu/l": _factor(1.0, "pathways.md 1: ALT U/L (IU/L)"),
        "[iu]/l": _factor(1.0, "pathways.md 1: ALT U/L (IU/L)"),
        "ukat/l": _factor(60.0, "1 ukat/L = 60 U/L (SI)"),
    },
    "leptin": {
        "ng/ml": _factor(1.0, _IDENTITY),
        "ug/l": _factor(1.0, "pathways.md 1: leptin ng/mL (= ug/L)"),
    },
    "adiponectin": {
        "mg/l": _factor(1.0, _IDENTITY),
        "ug/ml": _factor(1.0, "pathways.md 1: adiponectin mg/L (= ug/mL)"),
        "ng/ml": _factor(0.001, "pathways.md 1: ng/mL / 1000"),
    },
    "weight": {
        "kg": _factor(1.0, _IDENTITY),
        "[lb_av]": _factor(0.45359237, "pathways.md 1: [lb_av] x 0.45359237"),
        "lb": _factor(0.45359237, "pathways.md 1: [lb_av] x 0.45359237"),
        "lbs": _factor(0.45359237, "pathways.md 1: [lb_av] x 0.45359237"),
        "g": _factor(0.001, "pathways.md 1: g / 1000"),
    },
    "height": {
        "m": _factor(1.0, _IDENTITY),
        "cm": _factor(0.01, "pathways.md 1: height m/cm/[in_i]"),
        "[in_i]": _factor(0.0254, "international inch = 2.54 cm"),
        "in": _factor(0.0254, "international inch = 2.54 cm"),
    },
    "bmi": {
        "kg/m2": _factor(1.0, _IDENTITY),
        "kg/m^2": _factor(1.0, _IDENTITY),
        "kg/(m2)": _factor(1.0, _IDENTITY),
    },
    "hcg": {
        # hCG is reported in IU/L or mIU/mL (the same number); pathways.md 1 threshold 25 IU/L [M]
        "[iu]/l": _factor(1.0, _IDENTITY),
        "iu/l": _factor(1.0, _IDENTITY),
        "m[iu]/ml": _factor(1.0, "mIU/mL = IU/L"),
        "miu/ml": _factor(1.0, "mIU/mL = IU/L"),
        "u/l": _factor(1.0, "hCG U/L = IU/L"),
    },
    "insulin_dose": {
        "u": _factor(1.0, _IDENTITY),
        "[iu]": _factor(1.0, "pathways.md 1: insulin units U, [iU], IU, units"),
        "iu": _factor(1.0, "pathways.md 1"),
        "unit": _factor(1.0, "pathways.md 1"),
        "units": _factor(1.0, "pathways.md 1"),
        "{units}": _factor(1.0, "pathways.md 1"),
        "[u]": _factor(1.0, "pathways.md 1"),
    },
    # LV ejection fraction (pathways.md 1, pioglitazone cautions): reported as a percent (35 %) or as
    # a fraction (UCUM "1": 0.35). A unitless number is read by labs.yaml's ``unitless`` rule.
    "lvef": {
        "%": _factor(1.0, _IDENTITY),
        "1": _factor(100.0, "an ejection fraction written as a fraction (UCUM unity): 0.35 = 35 %"),
        "{fraction}": _factor(100.0, "an ejection fraction written as a fraction: 0.35 = 35 %"),
    },
}


def canonical_unit(quantity: str) -> str:
    """The canonical unit of ``quantity`` (a key of :data:`CANONICAL_UNITS`)."""
    try:
        return CANONICAL_UNITS[quantity]
    except KeyError:
        raise UnitError(f"unknown quantity {quantity!r}") from None


def convert(value: float, unit: str | None, quantity: str) -> float:
    """Convert ``value`` in ``unit`` to the canonical unit of ``quantity``.

    Raises :class:`UnitError` when the unit is missing or not convertible: callers must not fall back
    to comparing the raw number.
    """
    table = _TABLE.get(quantity)
    if table is None:
        raise UnitError(f"unknown quantity {quantity!r}")
    key = normalise_unit_text(unit)
    if not key:
        raise UnitError(f"no unit given for {quantity} (expected {CANONICAL_UNITS[quantity]})")
    conversion = table.get(key) or table.get(key.replace("{", "").replace("}", ""))
    if conversion is None:
        raise UnitError(
            f"unit {unit!r} cannot be converted to {CANONICAL_UNITS[quantity]} for {quantity}"
        )
    return conversion.to_canonical(float(value))


def accepted_units(quantity: str) -> list[str]:
    """The unit spellings (normalised) that :func:`convert` accepts for ``quantity``."""
    return list(_TABLE.get(quantity, {}))
