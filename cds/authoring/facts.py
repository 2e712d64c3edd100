"""The fact vocabulary as an informatician reads it: every name a condition may use, and where it comes from.

Why: writing ``egfr < 30`` or ``{condition: heart-failure}`` needs the names, their types and units,
and which labs or value sets fill them; that took a Python one-liner over the loader before. Each
row says what the fact is built from: a lab definition in ``labs.yaml`` (with its value sets and
look-back), a value set (with its kind), or the patient/record itself.
"""

from __future__ import annotations

from typing import Any

from cds.cards.render import plain_unit
from cds.rules.model import RuleSet
from cds.rules.usage import fact_owners

__all__ = ["fact_rows", "plain_unit"]

def fact_rows(ruleset: RuleSet) -> list[dict[str, Any]]:
    """One row per fact, sorted by name: name, type, unit (plain and UCUM), description, source."""
    owners = fact_owners(ruleset)
    rows = []
    for name, spec in sorted(ruleset.catalog.items()):
        kind, owner = owners.get(name, ("", ""))
        row: dict[str, Any] = {"name": name, "type": spec.type, "unit": plain_unit(spec.unit),
                               "ucum": spec.unit or "", "description": spec.description}
        if spec.choices:
            row["choices"] = list(spec.choices)
        if kind == "lab":
            lab = ruleset.labs.definitions[owner]
            row["lab"] = owner
            row["valuesets"] = list(lab.valuesets)
            row["source"] = (f"lab {owner} ({lab.title}; value sets {', '.join(lab.valuesets)}; "
                             f"look-back {lab.lookback_months or 'any'} months)")
        elif kind == "valueset":
            vs = ruleset.valuesets[owner]
            row["valuesets"] = [owner]
            row["source"] = f"{vs.kind} value set {owner} ({vs.title})"
        else:
            row["source"] = "the patient record (computed by the facts layer)"
        rows.append(row)
    return rows
