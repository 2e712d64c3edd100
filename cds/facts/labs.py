"""Laboratory and body-measure facts: latest valid value per concept, in canonical units.

The definitions (codes, unit, look-back) are data in ``rulesets/labs.yaml`` so an informatician can
see and change them; this module applies the normalisation rules of pathways.md section 1:

* status final / amended / corrected only;
* latest value per concept inside the look-back window (values dated after "now" do not exist yet);
* units converted before any comparison; an unconvertible unit makes the value *could not be read*
  (the third state, :class:`UnreadableValue`), never compared raw;
* comparators ("<15", ">90", ``valueQuantity.comparator``) are bounds, carried as an interval
  (``LabValue.low``/``high``) that decides a threshold only when it lies wholly on one side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cds._exceptions import RulesetError
from cds.valuesets import canonical_system
from cds.facts.models import IgnoredValue, LabValue, UnreadableValue
from cds.fhir.dates import parse_fhir_datetime
from cds.fhir.ingest import PatientRecord, wellformed_concept
from cds.fhir.validation import resource_label
from cds.rules.yamlsource import safe_load
from cds.units import UnitError, accepted_units, canonical_unit, convert, normalise_unit_text

__all__ = ["LabCatalog", "LabDefinition", "load_lab_catalog", "months_before", "observation_date"]

USABLE_STATUSES = frozenset({"final", "amended", "corrected"})  # pathways.md 1


class TextQualifier(BaseModel):
    """Codes of ``valueset`` count only when the Observation's text/display matches ``pattern``."""

    model_config = ConfigDict(extra="forbid")
    valueset: str
    pattern: str


class UnitlessRule(BaseModel):
    """A number written without a unit is in ``unit`` when it is above ``above`` and at most ``max``."""

    model_config = ConfigDict(extra="forbid")
    unit: str
    above: float | None = None
    max: float | None = None


class LabDefinition(BaseModel):
    """One lab fact: which codes feed it, its canonical unit and its look-back window."""

    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    quantity: str
    valuesets: list[str]
    text_qualified: TextQualifier | None = None
    lookback_months: int | None = Field(default=None, ge=1)
    aggregate: Literal["latest", "min"] = "latest"
    same_date: Literal["latest", "lowest"] = "latest"  # values of the latest date: pathways.md 1
    unitless: list[UnitlessRule] = Field(default_factory=list)  # report unit(s) for a number without unit
    # units of another quantity recorded under this concept's codes: the record is not this concept
    # at all (absent, reported), e.g. a creatinine clearance in plain mL/min under an eGFR code
    not_this_concept_units: list[str] = Field(default_factory=list)
    source: str

    @property
    def unit(self) -> str:
        return canonical_unit(self.quantity)


@dataclass
class LabCatalog:
    """The lab definitions plus a (system, code) index so each Observation is looked at once."""

    definitions: dict[str, LabDefinition]
    by_code: dict[tuple[str, str], list[tuple[str, re.Pattern[str] | None]]]

    def candidates(self, observation: dict[str, Any]) -> list[tuple[str, re.Pattern[str] | None]]:
        found: list[tuple[str, re.Pattern[str] | None]] = []
        for coding in (observation.get("code") or {}).get("coding") or []:
            if isinstance(coding, dict):
                system, code = coding.get("system"), coding.get("code")
                if not isinstance(system, str) or not isinstance(code, str):
                    continue  # the index holds (system, code) strings only: nothing else can match
                hits = self.by_code.get((system, code))
                if hits is None and (canonical := canonical_system(system)) is not None:  # urn:oid / alias spellings
                    hits = self.by_code.get((canonical, code))
                found.extend(hits or ())
        return found


def load_lab_catalog(path: Path, valuesets: dict[str, Any]) -> LabCatalog:
    """Read ``labs.yaml`` and index its codes; unknown value sets or quantities are errors."""
    try:
        data = safe_load(path.read_text(encoding="utf-8")) or {}  # libyaml, duplicate keys refused
    except (OSError, yaml.YAMLError) as exc:
        raise RulesetError(f"{path}: cannot read lab definitions: {exc}") from None
    issues: list[str] = []
    definitions: dict[str, LabDefinition] = {}
    for name, body in (data.get("labs") or {}).items():
        try:
            definition = LabDefinition.model_validate({"name": name, **(body or {})})
            definition.unit  # noqa: B018 - raises for an unknown quantity
        except (ValidationError, UnitError) as exc:
            issues.append(f"{path}: lab {name}: {exc}")
            continue
        for vs in definition.valuesets + (
            [definition.text_qualified.valueset] if definition.text_qualified else []
        ):
            if vs not in valuesets:
                issues.append(f"{path}: lab {name}: unknown value set {vs!r}")
        definitions[name] = definition
    if issues:
        raise RulesetError("lab definitions do not load", issues)
    by_code: dict[tuple[str, str], list[tuple[str, re.Pattern[str] | None]]] = {}
    for definition in definitions.values():
        entries: list[tuple[str, re.Pattern[str] | None]] = [
            (vs, None) for vs in definition.valuesets
        ]
        if definition.text_qualified:
            entries.append(
                (
                    definition.text_qualified.valueset,
                    re.compile(definition.text_qualified.pattern, re.IGNORECASE),
                )
            )
        for vs_id, pattern in entries:
            vs = valuesets[vs_id]
            for system, code in ((sy, c) for sy in vs.systems for c in vs.codes_for(sy)):
                bucket = by_code.setdefault((system, code), [])
                if (definition.name, pattern) not in bucket:
                    bucket.append((definition.name, pattern))
    return LabCatalog(definitions=definitions, by_code=by_code)


def months_before(now: datetime, months: int) -> datetime:
    """The same instant ``months`` calendar months earlier (day clamped to the month's length)."""
    year, month = divmod(now.month - 1 - months, 12)
    year += now.year
    month += 1
    import calendar

    day = min(now.day, calendar.monthrange(year, month)[1])
    return now.replace(year=year, month=month, day=day)


def observation_date(observation: dict[str, Any]) -> datetime | None:
    """When the value was true (pathways.md 1): ``effectiveDateTime``, else ``effectivePeriod.start``,
    else ``effectiveInstant``, else ``issued`` (the report time, later than the sample but the only
    date some feeds send). A value that does not parse is skipped for the next one."""
    period = observation.get("effectivePeriod") or {}
    for raw in (
        observation.get("effectiveDateTime"),
        period.get("start") if isinstance(period, dict) else None,
        observation.get("effectiveInstant"),
        observation.get("issued"),
    ):
        parsed = parse_fhir_datetime(raw)
        if parsed is not None:
            return parsed
    return None


def observation_text(observation: dict[str, Any]) -> str:
    code = observation.get("code") or {}
    parts = [code.get("text") or ""]
    parts += [c.get("display") or "" for c in code.get("coding") or [] if isinstance(c, dict)]
    return " ".join(p for p in parts if isinstance(p, str))


def _first_code(observation: dict[str, Any]) -> str | None:
    for coding in (observation.get("code") or {}).get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            system = str(coding.get("system") or "")
            alias = "LOINC" if system == "http://loinc.org" else system
            return f"{alias}#{coding['code']}"
    return None


_BOUND_TEXT = re.compile(r"^\s*(<=|>=|≤|≥|=<|=>|<|>|=)?\s*([-+]?(?:\d+(?:\.\d+)?|\.\d+))\s*(.*?)\s*$")
_COMPARATORS = {"<": "<", "<=": "<=", "=<": "<=", "≤": "<=", ">": ">", ">=": ">=", "=>": ">=", "≥": ">=", "=": None}


def _raw_value(observation: dict[str, Any]) -> str:
    """What the record says, as written, for the unreadable message."""
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict):
        unit = quantity.get("unit") or quantity.get("code") or ""
        return f"{quantity.get('comparator') or ''}{quantity.get('value', '')} {unit}".strip()
    if isinstance(observation.get("valueString"), str):
        return observation["valueString"]
    concept = observation.get("valueCodeableConcept")
    if isinstance(concept, dict):
        texts = [concept.get("text")] + [c.get("display") or c.get("code") for c in concept.get("coding") or []
                                         if isinstance(c, dict)]
        return next((t for t in texts if isinstance(t, str) and t), "coded value")
    for key in ("valueInteger", "valueBoolean", "valueDateTime", "valueRange", "valueRatio"):
        if key in observation:
            return f"{key}: {observation[key]}"
    return "no value"


class _Unreadable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _convert(number: float, unit: str | None, alt_unit: str | None, quantity: str) -> float:
    try:
        return convert(number, unit, quantity)
    except UnitError as exc:
        if alt_unit and alt_unit != unit:
            try:
                return convert(number, alt_unit, quantity)
            except UnitError:
                pass
        raise _Unreadable(str(exc)) from None


def _unitless(definition: LabDefinition, number: float) -> list[float] | None:
    """Canonical readings of a number written without a unit (pathways.md 1, Comparators).

    The concept's report unit where one is in use (``unitless`` in labs.yaml, e.g. eGFR; HbA1c %
    up to 20, mmol/mol above); otherwise the number read in every accepted unit, so a threshold is
    decided only when all of them give the same answer.
    """
    for rule in definition.unitless:
        if (rule.above is None or number > rule.above) and (rule.max is None or number <= rule.max):
            return [convert(number, rule.unit, definition.quantity)]
    readings = sorted({round(convert(number, u, definition.quantity), 6) for u in accepted_units(definition.quantity)})
    return readings or None


def _interval(definition: LabDefinition, comparator: str | None, number: float, unit: str | None,
              alt_unit: str | None) -> tuple[float, str | None, float | None, float | None, bool, bool]:
    """(value, comparator, low, high, low_inclusive, high_inclusive) in the canonical unit."""
    if unit or alt_unit:
        readings = [_convert(number, unit, alt_unit, definition.quantity)]
    else:
        found = _unitless(definition, number)
        if not found:
            raise _Unreadable(f"no unit, and {definition.title} has no report unit")
        readings = found
    low_v, high_v = round(min(readings), 6), round(max(readings), 6)
    if comparator is None:
        if low_v == high_v:
            return low_v, None, low_v, low_v, True, True
        return high_v, "~", low_v, high_v, True, True
    if comparator in ("<", "<="):
        return high_v, comparator, None, high_v, True, comparator == "<="
    return low_v, comparator, low_v, None, comparator == ">=", True


def read_observation(definition: LabDefinition, observation: dict[str, Any], when: datetime,
                     record: PatientRecord | None = None) -> LabValue | UnreadableValue | IgnoredValue:
    """One Observation of a lab concept: a value or bound, could not be read, or not usable.

    * not usable (``IgnoredValue``): status other than final/amended/corrected (pathways.md 1), or
      ``dataAbsentReason`` with no value (absent, and the reason is shown);
    * a value (``LabValue``): ``valueQuantity`` (with its ``comparator`` as a bound), a ``valueString``
      "[<|<=|>|>=|≤|≥] number [unit]", or a ``valueInteger``, converted to the canonical unit;
    * could not be read (``UnreadableValue``): any other text ("see report", "haemolysed"), a unit
      that cannot be converted, a coded value. Invalid FHIR raises :class:`InvalidResourceError`.
    """
    label = resource_label(observation)
    status = observation.get("status")
    if status not in USABLE_STATUSES:
        return IgnoredValue(fact=definition.name, resource=label, reason=f"status {status!r}")
    raw = _raw_value(observation)

    def unreadable(reason: str) -> UnreadableValue:
        return UnreadableValue(fact=definition.name, resource=label, raw=raw, reason=reason, date=when,
                               title=definition.title)

    if record is not None:
        # invalid FHIR (a value "abc" in valueQuantity, an impossible date) is refused with a clear
        # error naming the resource and field, as for every resource the rules read; "could not be
        # read" is for valid records whose content cannot be interpreted
        record.validate(observation)
    value_keys = [k for k in observation if k.startswith("value")]
    if not value_keys and observation.get("dataAbsentReason") is not None:
        reason = observation["dataAbsentReason"]
        text = reason.get("text") or next(
            (c.get("display") or c.get("code") for c in reason.get("coding") or [] if isinstance(c, dict)), ""
        ) if isinstance(reason, dict) else str(reason)
        return IgnoredValue(fact=definition.name, resource=label, reason=f"data absent ({text or 'no reason given'})")
    try:
        quantity = observation.get("valueQuantity")
        if isinstance(quantity, dict):
            if quantity.get("value") is None:
                raise _Unreadable("valueQuantity has no value")
            comparator = quantity.get("comparator")
            if comparator is not None and comparator not in ("<", "<=", ">", ">="):
                raise _Unreadable(f"comparator {comparator!r} is not a bound")
            unit = quantity.get("code") or quantity.get("unit")
            alt = quantity.get("unit") if quantity.get("code") else None
            number = float(quantity["value"])
        elif isinstance(observation.get("valueString"), str):
            match = _BOUND_TEXT.match(observation["valueString"])
            if not match:
                raise _Unreadable("text, not a number or a bound")
            comparator = _COMPARATORS[match.group(1)] if match.group(1) else None
            number, unit, alt = float(match.group(2)), (match.group(3) or None), None
        elif isinstance(observation.get("valueInteger"), int) and not isinstance(observation["valueInteger"], bool):
            comparator, number, unit, alt = None, float(observation["valueInteger"]), None, None
        else:
            raise _Unreadable("no numeric value" if not value_keys else f"{value_keys[0]} is not a number")
        foreign = {normalise_unit_text(u) for u in definition.not_this_concept_units}
        if foreign and normalise_unit_text(unit) in foreign:
            return IgnoredValue(fact=definition.name, resource=label,
                                reason=f"unit {unit!r} is not an {definition.title} (pathways.md 1): not counted")
        value, comp, low, high, low_inc, high_inc = _interval(definition, comparator, number, unit, alt)
    except _Unreadable as exc:
        return unreadable(exc.reason)
    except (TypeError, ValueError) as exc:
        return unreadable(str(exc))
    written_unit = (quantity.get("unit") or quantity.get("code")) if isinstance(quantity, dict) else unit
    unchanged = (comp is None and abs(value - number) < 1e-9
                 and normalise_unit_text(written_unit) == normalise_unit_text(definition.unit))
    original = "" if unchanged else (raw if not isinstance(quantity, dict) else
                                     f"{comparator or ''}{_fmt_raw(number)} {written_unit or 'no unit'}".strip())
    high_ref = None
    ranges = observation.get("referenceRange") or []
    if ranges and isinstance(ranges[0], dict) and isinstance(ranges[0].get("high"), dict):
        high_q = ranges[0]["high"]
        try:
            if high_q.get("value") is not None:
                high_ref = convert(float(high_q["value"]), high_q.get("code") or high_q.get("unit") or written_unit,
                                   definition.quantity)
        except (UnitError, TypeError, ValueError):
            high_ref = None
    return LabValue(
        name=definition.name, value=value, unit=definition.unit, original=original, date=when,
        resource=label, code=_first_code(observation), reference_high=high_ref, comparator=comp,
        low=low, high=high, low_inclusive=low_inc, high_inclusive=high_inc,
    )


def _fmt_raw(number: float) -> str:
    return str(int(number)) if number == int(number) else str(number)


def lowest(values: list[LabValue]) -> LabValue:
    """The most conservative of same-date values for "lowest" (eGFR): interval minimum.

    min(X, Y) for X in [a1, b1], Y in [a2, b2] lies in [min(a1, a2), min(b1, b2)]; for points that is
    the lowest value. The value whose upper end is lowest is returned, with the lower end widened.
    """
    if len(values) == 1:
        return values[0]
    def high_key(v: LabValue) -> tuple[float, int]:
        return (v.high if v.high is not None else float("inf"), 0 if not v.high_inclusive else 1)
    best = min(values, key=high_key)
    lows = [v.low for v in values]
    if any(low is None for low in lows):
        low, low_inc = None, True
    else:
        low = min(lows)  # type: ignore[type-var]
        low_inc = any(v.low_inclusive for v in values if v.low == low)
    if low == best.low and low_inc == best.low_inclusive:
        return best
    comparator = best.comparator if low is None else ("~" if low != best.high else best.comparator)
    return best.model_copy(update={"low": low, "low_inclusive": low_inc, "comparator": comparator})


def select_labs(
    record: PatientRecord, catalog: LabCatalog, now: datetime
) -> tuple[dict[str, LabValue], dict[str, LabValue], list[IgnoredValue], dict[str, UnreadableValue]]:
    """Pick, per lab fact, the value in its window (``recent``), the latest readable ever (``last``)
    and the record that could not be read (``unreadable``).

    **Which unreadable record counts** (pathways.md 1, Three states): the fact is *could not be read*
    when the newest record of the concept inside its look-back (by calendar date) cannot be read and
    no readable value has the same or a later date; then ``recent`` has no value for it, and an older
    readable value is only ``last`` (shown, never used as current). A record with no usable date
    counts as unreadable only when no readable value is in the look-back. An unreadable record
    outside the look-back is stale like any other and ignored. For ``aggregate: min`` (lowest
    glucose) an unreadable record in the window widens the minimum downwards: the readable minimum
    becomes an upper bound only.

    Dates: ``effectiveDateTime``, else ``effectivePeriod.start``, else ``effectiveInstant``, else
    ``issued``; a date after now is ignored and said in ``ignored``. Values of the latest date are
    combined by ``same_date`` (eGFR: the lowest, e.g. race-specific pairs); otherwise the latest
    instant wins. The look-back is inclusive: a value dated on the calendar day exactly N months
    before now is recent.
    """
    buckets: dict[str, list[tuple[datetime, dict[str, Any]]]] = {}
    undated: dict[str, list[dict[str, Any]]] = {}
    ignored: list[IgnoredValue] = []
    unreadable: dict[str, UnreadableValue] = {}
    for observation in record.of_type("Observation"):
        if not wellformed_concept(observation.get("code")):
            record.validate(observation)  # raises, naming it: an unreadable code may hide a relevant lab
            continue
        hits = catalog.candidates(observation)
        if not hits:
            continue
        text = None
        names: set[str] = set()
        for name, pattern in hits:
            if pattern is not None:
                text = text if text is not None else observation_text(observation)
                if not pattern.search(text):
                    continue
            names.add(name)
        if not names:
            continue
        when = observation_date(observation)
        for name in names:
            if when is None:
                if observation.get("status") in USABLE_STATUSES:
                    undated.setdefault(name, []).append(observation)
                else:
                    ignored.append(IgnoredValue(fact=name, resource=resource_label(observation),
                                                reason=f"status {observation.get('status')!r}"))
            elif when > now:
                ignored.append(
                    IgnoredValue(
                        fact=name,
                        resource=resource_label(observation),
                        reason=f"dated {when.date()} after the evaluation time: a future-dated result is ignored",
                    )
                )
            else:
                buckets.setdefault(name, []).append((when, observation))

    recent: dict[str, LabValue] = {}
    last: dict[str, LabValue] = {}
    for name, items in buckets.items():
        definition = catalog.definitions[name]
        cutoff = months_before(now, definition.lookback_months) if definition.lookback_months else None
        items.sort(key=lambda pair: pair[0], reverse=True)
        if definition.aggregate == "min":
            _select_min(definition, items, cutoff, record, recent, last, ignored, unreadable)
            continue
        index = 0
        decided = False
        while index < len(items):
            day = items[index][0].date()
            group = []
            while index < len(items) and items[index][0].date() == day:
                group.append(items[index])
                index += 1
            # by calendar date: a value dated "2025-11-01" is inside a 12-month window on 2026-11-01
            # whatever the time of day of "now" (inclusive look-back)
            in_window = cutoff is None or day >= cutoff.date()
            readable: list[LabValue] = []
            for when, observation in group:
                result = read_observation(definition, observation, when, record)
                if isinstance(result, LabValue):
                    readable.append(result)
                elif isinstance(result, UnreadableValue):
                    if not decided and in_window and name not in unreadable:
                        unreadable[name] = result
                    else:
                        ignored.append(IgnoredValue(fact=name, resource=result.resource,
                                                    reason=f"could not be read ({result.raw!r}: {result.reason})"))
                else:
                    ignored.append(result)
            if not readable:
                continue
            chosen = lowest(readable) if definition.same_date == "lowest" else readable[0]
            pending = unreadable.get(name)
            if not decided and in_window and pending is not None and pending.date is not None \
                    and pending.date.date() == day:
                # same date as a readable value: the readable one decides (said in the explanation)
                stale = unreadable.pop(name)
                ignored.append(IgnoredValue(
                    fact=name, resource=stale.resource,
                    reason=f"could not be read ({stale.raw!r}); a readable value of the same date is used"))
            if not decided and in_window and name not in unreadable:
                recent[name] = chosen
            last[name] = chosen
            break
    for name, observations in undated.items():
        definition = catalog.definitions[name]
        for observation in observations:
            result = read_observation(definition, observation, now, record)  # date only for the check
            if isinstance(result, IgnoredValue):
                ignored.append(result)
                continue
            reason = "no usable date (effective[x] or issued)"
            if name not in recent and name not in unreadable:
                unreadable[name] = UnreadableValue(
                    fact=name, resource=resource_label(observation), raw=_raw_value(observation),
                    reason=reason, date=None, title=definition.title)
            else:
                ignored.append(IgnoredValue(fact=name, resource=resource_label(observation), reason=reason))
    return recent, last, ignored, unreadable


def _select_min(definition: LabDefinition, items: list[tuple[datetime, dict[str, Any]]], cutoff: datetime | None,
                record: PatientRecord, recent: dict[str, LabValue], last: dict[str, LabValue],
                ignored: list[IgnoredValue], unreadable: dict[str, UnreadableValue]) -> None:
    name = definition.name
    best: LabValue | None = None
    first_unreadable: UnreadableValue | None = None
    for when, observation in items:
        if cutoff is not None and when.date() < cutoff.date():
            break
        result = read_observation(definition, observation, when, record)
        if isinstance(result, LabValue):
            best = result if best is None else lowest([best, result])
        elif isinstance(result, UnreadableValue):
            if first_unreadable is None:
                first_unreadable = result
            else:
                ignored.append(IgnoredValue(fact=name, resource=result.resource,
                                            reason=f"could not be read ({result.raw!r}: {result.reason})"))
        else:
            ignored.append(result)
    if best is None:
        if first_unreadable is not None:
            unreadable[name] = first_unreadable
        return
    if first_unreadable is not None:
        # an unreadable glucose may have been the lowest: the readable minimum is only an upper bound
        ignored.append(IgnoredValue(
            fact=name, resource=first_unreadable.resource,
            reason=f"could not be read ({first_unreadable.raw!r}); the lowest readable value is an upper bound only"))
        comparator = best.comparator if best.is_bound and best.low is None else "<="
        best = best.model_copy(update={"low": None, "comparator": comparator})
    recent[name] = best
    last[name] = best


__all__ += ["lowest", "observation_text", "read_observation", "select_labs", "USABLE_STATUSES"]
