"""Conditions: parse rule YAML into a small tree, compile it for durable_rules, explain it.

Written forms (all may nest)::

    "age >= 18"                      comparison; right side a number, number + unit, threshold name,
    "egfr < egfr_stop"               true/false, or a word for string facts ("sex == female")
    "hypoglycaemia"                  a definition (rulesets/definitions.yaml) or a boolean fact
    {all: [...]} {any: [...]} {not: ...}
    {condition: heart-failure, status: active|history, within: 10 months}
    {medication: metformin, status: active|drafted|any|allergy|active-or-drafted, within: 24 months}
    {procedure: sir-referral, within: 24 months}
    {device: u500-syringe}
    {fact: age, gte: 18}             long form of a comparison (eq ne lt lte gt gte)
    {undecided: "egfr < egfr_stop"}  a record exists but cannot decide the comparison (unreadable or
                                     a straddling bound; pathways.md 1 "could not be read for that threshold")

The matching itself is done by durable_rules on the compiled JSON; :meth:`Node.evaluate` exists only
to *explain* a result (which condition failed, with the patient's value) and is checked against the
engine by tests. Missing values: a comparison on an unknown number is false, and its negation is
true (compiled as ``x >= v or x_known == false``), so "not known" never passes for "normal".
Lab facts are three-valued (see :class:`Compare`): a record that cannot be read, or a bound that
straddles the threshold, makes both the comparison and its negation false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cds.facts.build import fact_key
from cds.facts.models import FactSpec, fmt_number
from cds.units import UnitError, convert, normalise_unit_text

__all__ = [
    "All", "AnyOf", "Compare", "ConditionParser", "Node", "Not", "ParseIssue", "Ref", "Undecided",
    "definition_fact", "references",
]

DAYS_PER_MONTH = 30.4375  # windows "within N months" on recorded dates: average Gregorian month
_OPS = {"==": "eq", "!=": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
_SYMBOL = {v: k for k, v in _OPS.items()}
_NEGATE = {"eq": "ne", "ne": "eq", "lt": "gte", "lte": "gt", "gt": "lte", "gte": "lt"}
_DURABLE_OP = {"lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte", "ne": "$neq"}
_COMPARISON = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")
_NAME = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*$")
_NUMBER_UNIT = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*(.*)$")
_WINDOW = re.compile(r"^\s*(\d+)\s*(day|days|d|month|months|mo|year|years|a)\s*$")
_UNIT_ALIASES = {"a": {"a", "y", "yr", "year", "years"}, "d": {"d", "day", "days"}}


@dataclass
class ParseIssue:
    location: tuple[str | int, ...]
    message: str


class Node:
    """A condition; ``compile`` gives durable_rules JSON, ``evaluate`` a (result, why) for explain."""

    def compile(self, negate: bool = False) -> dict[str, Any]:
        raise NotImplementedError("The 'compile' method must be implemented.")

    def evaluate(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        raise NotImplementedError("The 'evaluate' method must be implemented.")

    def evaluate_negated(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        """Mirror of ``compile(negate=True)``: with three-state facts "not X" is not "X fails"
        (a value that cannot decide X makes both X and "not X" fail)."""
        ok, _why = self.evaluate(values)
        return (not ok), (None if not ok else f"{self.describe()} holds, but must not")

    def describe(self) -> str:
        raise NotImplementedError("The 'describe' method must be implemented.")

    def facts(self) -> set[str]:
        raise NotImplementedError("The 'facts' method must be implemented.")


def definition_fact(name: str) -> str:
    """The boolean fact that carries a definition's truth into later passes: ``def_<name>``."""
    return f"def_{name}"


def references(node: Node | None) -> set[str]:
    """Names of the definitions ``node`` refers to directly (not through other definitions)."""
    if node is None:
        return set()
    if isinstance(node, Ref):
        return {node.name}
    if isinstance(node, (All, AnyOf)):
        return set().union(*(references(item) for item in node.items)) if node.items else set()
    if isinstance(node, Not):
        return references(node.item)
    return set()


@dataclass
class Compare(Node):
    """One comparison. On a *bounded* number (a lab with ``_low``/``_high`` companions, pathways.md 1
    Comparators) it is three-valued: ``egfr < 30`` holds when every value the record allows is below
    30 (``egfr_high < 30``, or ``== 30`` exclusive), its negation holds when none is
    (``egfr_low >= 30``) or when nothing is recorded (absent), and neither holds when the record is
    unreadable or a bound straddles 30 ("could not be read for that threshold"). So a start/consider
    rule's exclusion ``not: egfr < 30`` is not met by an unreadable value, and ``egfr >= 45`` is met by
    ">90". Authors keep writing ``egfr < metformin_egfr_stop``.
    """

    fact: str
    op: str  # eq ne lt lte gt gte
    value: float | str | bool
    kind: str  # bool number string
    shown: str  # what the author wrote, for explanations: "egfr_stop (30 mL/min/{1.73_m2})"
    label: str = ""
    bounded: bool = False  # the fact has <fact>_low/_high/_unreadable companions

    def compile(self, negate: bool = False) -> dict[str, Any]:
        op = _NEGATE[self.op] if negate else self.op
        if self.kind == "bool":
            truth = bool(self.value) if op == "eq" else not bool(self.value)
            return {self.fact: truth}
        if self.bounded and op in _ORDER_OPS:
            decided = _or([_and(c) for c in _decided_clauses(self.fact, op, self.value)])
            return {"$or": [decided, _and(_absent_clause(self.fact))]} if negate else decided
        expr = {self.fact: self.value} if op == "eq" else {_DURABLE_OP[op]: {self.fact: self.value}}
        if self.kind == "number" and negate:
            # not (x < v)  ==  x >= v  or  x is unknown
            return {"$or": [expr, {f"{self.fact}_known": False}]}
        return expr

    def evaluate(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        if self.kind == "number" and self.bounded and self.op in _ORDER_OPS:
            if _holds_any(_decided_clauses(self.fact, self.op, self.value), values):
                return True, None
            return False, self._why_not(values)
        actual = values.get(self.fact)
        if actual is None:
            return False, f"{self.label or self.fact} is not known (needed: {self.describe()})"
        result = _apply(self.op, actual, self.value)
        if result:
            return True, None
        is_number = isinstance(actual, (int, float)) and not isinstance(actual, bool)
        shown_actual = fmt_number(actual) if is_number else str(actual).lower()
        return False, f"{self.describe()} is false: {self.fact} = {shown_actual}"

    def evaluate_negated(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        if self.kind == "number" and self.bounded and self.op in _ORDER_OPS:
            clauses = _decided_clauses(self.fact, _NEGATE[self.op], self.value) + [_absent_clause(self.fact)]
            if _holds_any(clauses, values):
                return True, None
            if _holds_any(_decided_clauses(self.fact, self.op, self.value), values):
                return False, f"{self.describe()} holds, but must not"
            return False, f"{self.describe()} cannot be ruled out: {self._state(values)}"
        if self.kind == "number":
            actual = values.get(self.fact)
            if actual is None:
                return True, None
            ok = _apply(_NEGATE[self.op], actual, self.value)
            return ok, (None if ok else f"{self.describe()} holds, but must not")
        return super().evaluate_negated(values)

    def _state(self, values: dict[str, Any]) -> str:
        if values.get(f"{self.fact}_unreadable"):
            return f"{self.fact} could not be read"
        low, high = values.get(f"{self.fact}_low"), values.get(f"{self.fact}_high")
        if low is None and high is None:
            return f"{self.fact} is not known"
        if low is not None and high is not None and low == high:
            return f"{self.fact} = {fmt_number(low)}"
        parts = []
        if low is not None:
            parts.append(f"{'>=' if values.get(f'{self.fact}_low_inclusive') else '>'}{fmt_number(low)}")
        if high is not None:
            parts.append(f"{'<=' if values.get(f'{self.fact}_high_inclusive') else '<'}{fmt_number(high)}")
        return f"{self.fact} is {' and '.join(parts)} (a bound that does not decide {self.describe()})"

    def _why_not(self, values: dict[str, Any]) -> str:
        if _holds_any(_decided_clauses(self.fact, _NEGATE[self.op], self.value), values):
            return f"{self.describe()} is false: {self._state(values)}"
        return f"{self.label or self.fact}: {self._state(values)} (needed: {self.describe()})"

    def describe(self) -> str:
        if self.kind == "bool":
            positive = bool(self.value) == (self.op == "eq")
            return (self.label or self.fact) if positive else f"not {self.label or self.fact}"
        return f"{self.fact} {_SYMBOL[self.op]} {self.shown}"

    def facts(self) -> set[str]:
        return {self.fact}


_ORDER_OPS = ("lt", "lte", "gt", "gte")


def _and(leaves: list[dict[str, Any]]) -> dict[str, Any]:
    return leaves[0] if len(leaves) == 1 else {"$and": leaves}


def _or(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return parts[0] if len(parts) == 1 else {"$or": parts}


def _decided_clauses(fact: str, op: str, value: Any) -> list[list[dict[str, Any]]]:
    """Conjunctions under which ``fact op value`` holds for every value the record allows."""
    low, high = f"{fact}_low", f"{fact}_high"
    if op == "lt":
        return [[{"$lt": {high: value}}], [{high: value}, {f"{high}_inclusive": False}]]
    if op == "lte":
        return [[{"$lte": {high: value}}]]
    if op == "gt":
        return [[{"$gt": {low: value}}], [{low: value}, {f"{low}_inclusive": False}]]
    if op == "gte":
        return [[{"$gte": {low: value}}]]
    raise ValueError(op)


def _not_decided_clauses(fact: str, op: str, value: Any) -> list[list[dict[str, Any]]]:
    """Conjunctions under which ``fact op value`` is *not* decided true (the complement of the above)."""
    low, high = f"{fact}_low", f"{fact}_high"
    if op == "lt":
        return [[{"$gt": {high: value}}], [{high: value}, {f"{high}_inclusive": True}], [{f"{high}_known": False}]]
    if op == "lte":
        return [[{"$gt": {high: value}}], [{f"{high}_known": False}]]
    if op == "gt":
        return [[{"$lt": {low: value}}], [{low: value}, {f"{low}_inclusive": True}], [{f"{low}_known": False}]]
    if op == "gte":
        return [[{"$lt": {low: value}}], [{f"{low}_known": False}]]
    raise ValueError(op)


def _absent_clause(fact: str) -> list[dict[str, Any]]:
    """Nothing recorded in the look-back: no bound either way and nothing unreadable."""
    return [{f"{fact}_low_known": False}, {f"{fact}_high_known": False}, {f"{fact}_unreadable": False}]


def _undecided_clauses(fact: str, op: str, value: Any) -> list[list[dict[str, Any]]]:
    """A record exists but decides ``fact op value`` neither way (unreadable, or a straddling bound)."""
    clauses = [[{f"{fact}_unreadable": True}]]
    for a in _not_decided_clauses(fact, op, value):
        for b in _not_decided_clauses(fact, _NEGATE[op], value):
            unknown = {f"{fact}_low_known", f"{fact}_high_known"}
            keys = {next(iter(leaf)) for leaf in a + b}
            if unknown <= keys:
                continue  # neither bound known: absent or unreadable, covered above
            clauses.append(a + b)
    return clauses


def _leaf_holds(leaf: dict[str, Any], values: dict[str, Any]) -> bool:
    """How durable_rules reads one compiled leaf; a missing property never matches."""
    key = next(iter(leaf))
    if key.startswith("$"):
        (name, expected), = leaf[key].items()
        actual = values.get(name)
        if actual is None or isinstance(actual, bool):
            return False
        return _apply({"$lt": "lt", "$lte": "lte", "$gt": "gt", "$gte": "gte", "$neq": "ne"}[key], actual, expected)
    return key in values and values[key] == leaf[key]


def _holds_any(clauses: list[list[dict[str, Any]]], values: dict[str, Any]) -> bool:
    return any(all(_leaf_holds(leaf, values) for leaf in clause) for clause in clauses)


@dataclass
class Undecided(Node):
    """``{undecided: "egfr < metformin_egfr_stop"}``: a record of the fact exists in its look-back but
    cannot decide the comparison - it could not be read, or it is a bound on both sides of the
    threshold ("<60" for ``egfr >= 45``). Absent (nothing recorded) is *not* undecided. This is how a
    safety rule names "could not be read for that threshold" (pathways.md 1, Comparators)."""

    compare: Compare

    def compile(self, negate: bool = False) -> dict[str, Any]:
        if negate:
            return {"$or": [self.compare.compile(), self.compare.compile(negate=True)]}
        return _or([_and(c) for c in _undecided_clauses(self.compare.fact, self.compare.op, self.compare.value)])

    def evaluate(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        if _holds_any(_undecided_clauses(self.compare.fact, self.compare.op, self.compare.value), values):
            return True, None
        return False, f"{self.compare.describe()} is decided or nothing is recorded: {self.compare._state(values)}"

    def evaluate_negated(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        ok, _ = self.evaluate(values)
        return (not ok), (None if not ok else f"{self.describe()} holds, but must not")

    def describe(self) -> str:
        return f"{self.compare.describe()} cannot be decided from the record"

    def facts(self) -> set[str]:
        return {self.compare.fact}


def _apply(op: str, actual: Any, expected: Any) -> bool:
    if op == "eq":
        return actual == expected
    if op == "ne":
        return actual != expected
    try:
        if op == "lt":
            return actual < expected
        if op == "lte":
            return actual <= expected
        if op == "gt":
            return actual > expected
        if op == "gte":
            return actual >= expected
    except TypeError:
        return False
    raise ValueError(op)


@dataclass
class All(Node):
    items: list[Node]

    def compile(self, negate: bool = False) -> dict[str, Any]:
        parts = [item.compile(negate) for item in self.items]
        if len(parts) == 1:
            return parts[0]
        return {"$or" if negate else "$and": parts}

    def evaluate(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        for item in self.items:
            ok, why = item.evaluate(values)
            if not ok:
                return False, why
        return True, None

    def evaluate_negated(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        for item in self.items:
            ok, _ = item.evaluate_negated(values)
            if ok:
                return True, None
        return False, f"{self.describe()} holds (or cannot be ruled out), but must not"

    def describe(self) -> str:
        return "all of: " + "; ".join(i.describe() for i in self.items)

    def facts(self) -> set[str]:
        return set().union(*(i.facts() for i in self.items)) if self.items else set()


@dataclass
class AnyOf(Node):
    items: list[Node]

    def compile(self, negate: bool = False) -> dict[str, Any]:
        parts = [item.compile(negate) for item in self.items]
        if len(parts) == 1:
            return parts[0]
        return {"$and" if negate else "$or": parts}

    def evaluate(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        reasons = []
        for item in self.items:
            ok, why = item.evaluate(values)
            if ok:
                return True, None
            reasons.append(why or item.describe())
        return False, "none of: " + " | ".join(reasons)

    def evaluate_negated(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        for item in self.items:
            ok, why = item.evaluate_negated(values)
            if not ok:
                return False, why
        return True, None

    def describe(self) -> str:
        return "any of: " + "; ".join(i.describe() for i in self.items)

    def facts(self) -> set[str]:
        return set().union(*(i.facts() for i in self.items)) if self.items else set()


@dataclass
class Not(Node):
    item: Node

    def compile(self, negate: bool = False) -> dict[str, Any]:
        return self.item.compile(not negate)

    def evaluate(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        return self.item.evaluate_negated(values)

    def evaluate_negated(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        return self.item.evaluate(values)

    def describe(self) -> str:
        return f"not ({self.item.describe()})"

    def facts(self) -> set[str]:
        return self.item.facts()


@dataclass
class Ref(Node):
    name: str
    inner: Node

    def compile(self, negate: bool = False) -> dict[str, Any]:
        # A definition is inferred by durable_rules in an earlier pass (compile.py) and arrives as a
        # boolean fact, so referring to it - or to its negation - costs one test, not its whole tree.
        return {definition_fact(self.name): not negate}

    def evaluate(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        ok, why = self.inner.evaluate(values)
        return ok, (None if ok else f"{self.name}: {why}")

    def evaluate_negated(self, values: dict[str, Any]) -> tuple[bool, str | None]:
        # a definition arrives as a two-valued boolean (def_<name>): "not X" = X was not inferred
        ok, _why = self.inner.evaluate(values)
        return (not ok), (None if not ok else f"{self.name} holds, but must not")


    def describe(self) -> str:
        return self.name

    def facts(self) -> set[str]:
        return self.inner.facts()


@dataclass
class ConditionParser:
    """Parses condition data against the fact vocabulary, thresholds, definitions and value sets."""

    catalog: dict[str, FactSpec]
    valuesets: dict[str, Any]
    thresholds: dict[str, Any]  # name -> ThresholdSpec
    definitions: dict[str, Any] = field(default_factory=dict)  # name -> DefinitionSpec
    issues: list[ParseIssue] = field(default_factory=list)
    _resolved: dict[str, Node] = field(default_factory=dict)
    _resolving: set[str] = field(default_factory=set)
    used_thresholds: set[str] = field(default_factory=set)
    used_valuesets: set[str] = field(default_factory=set)
    used_definitions: set[str] = field(default_factory=set)

    def with_thresholds(self, extra: dict[str, Any]) -> ConditionParser:
        return ConditionParser(
            catalog=self.catalog,
            valuesets=self.valuesets,
            thresholds={**self.thresholds, **extra},
            definitions=self.definitions,
            _resolved=self._resolved,
        )

    # -- entry point ---------------------------------------------------------------------------
    def parse(self, data: Any, location: tuple[str | int, ...] = ()) -> Node | None:
        if data is None:
            return None
        if isinstance(data, list):
            return All([n for i, d in enumerate(data) if (n := self.parse(d, location + (i,))) is not None])
        if isinstance(data, str):
            return self._parse_string(data, location)
        if isinstance(data, dict):
            return self._parse_mapping(data, location)
        self._fail(location, f"a condition must be text, a list or a mapping, not {type(data).__name__}")
        return None

    def _fail(self, location: tuple[str | int, ...], message: str) -> None:
        self.issues.append(ParseIssue(location, message))

    # -- strings -------------------------------------------------------------------------------
    def _parse_string(self, text: str, location: tuple[str | int, ...]) -> Node | None:
        name_match = _NAME.match(text)
        if name_match:
            name = name_match.group(1)
            if name in self.definitions and name in self.catalog:
                self._fail(location, f"{name!r} is both a definition and a fact; rename the definition")
                return None
            if name in self.definitions:
                return self._definition(name, location)
            spec = self.catalog.get(name)
            if spec is None:
                self._fail(location, f"unknown fact or definition {name!r}")
                return None
            if spec.type != "bool":
                self._fail(location, f"fact {name!r} is a {spec.type}; compare it (e.g. '{name} > 1')")
                return None
            return Compare(name, "eq", True, "bool", "true")
        match = _COMPARISON.match(text)
        if not match:
            self._fail(location, f"cannot read condition {text!r}; write e.g. 'egfr < 30 mL/min/{{1.73_m2}}'")
            return None
        fact, symbol, rhs = match.groups()
        return self._compare(fact, _OPS[symbol], rhs, location)

    def _compare(self, fact: str, op: str, rhs: Any, location: tuple[str | int, ...]) -> Node | None:
        spec = self.catalog.get(fact)
        if spec is None:
            self._fail(location, f"unknown fact {fact!r}")
            return None
        if spec.type == "bool":
            value = rhs if isinstance(rhs, bool) else {"true": True, "false": False}.get(str(rhs).strip().lower())
            if value is None or op not in ("eq", "ne"):
                self._fail(location, f"fact {fact!r} is true/false; use == true / == false")
                return None
            return Compare(fact, op, value, "bool", str(value).lower())
        if spec.type == "string":
            word = str(rhs).strip().strip("'\"")
            if op not in ("eq", "ne"):
                self._fail(location, f"fact {fact!r} is text; only == and != apply")
                return None
            if spec.choices and word not in spec.choices:
                self._fail(location, f"{word!r} is not a value of {fact!r} (one of {', '.join(spec.choices)})")
                return None
            return Compare(fact, op, word, "string", word)
        return self._numeric(fact, spec, op, rhs, location)

    def _numeric(self, fact: str, spec: FactSpec, op: str, rhs: Any, location: tuple[str | int, ...]) -> Node | None:
        if isinstance(rhs, bool):
            self._fail(location, f"fact {fact!r} is a number, not true/false")
            return None
        if isinstance(rhs, (int, float)):
            number, unit, shown = float(rhs), None, fmt_number(float(rhs))
        else:
            text = str(rhs).strip()
            if text in self.thresholds:
                threshold = self.thresholds[text]
                self.used_thresholds.add(text)
                number, unit = threshold.value, threshold.unit
                shown = f"{text} ({fmt_number(number)}{' ' + unit if unit else ''})"
            else:
                m = _NUMBER_UNIT.match(text)
                if not m:
                    self._fail(location, f"{text!r} is neither a number nor a known threshold")
                    return None
                number, unit = float(m.group(1)), (m.group(2).strip() or None)
                shown = text
        value = self._to_fact_unit(fact, spec, number, unit, location)
        if value is None:
            return None
        bounded = f"{fact}_high" in self.catalog and f"{fact}_unreadable" in self.catalog
        return Compare(fact, op, value, "number", shown, bounded=bounded)

    def _to_fact_unit(
        self, fact: str, spec: FactSpec, number: float, unit: str | None, location: tuple[str | int, ...]
    ) -> float | None:
        if spec.quantity:
            if unit is None:
                self._fail(location, f"threshold for {fact!r} has no unit (facts are in {spec.unit})")
                return None
            try:
                return round(convert(number, unit, spec.quantity), 6)
            except UnitError as exc:
                self._fail(location, f"{exc}")
                return None
        if unit is None or spec.unit is None:
            return number
        wanted = normalise_unit_text(spec.unit)
        if normalise_unit_text(unit) == wanted or normalise_unit_text(unit) in _UNIT_ALIASES.get(wanted, set()):
            return number
        if wanted == "d":
            window = _WINDOW.match(f"{fmt_number(number)} {unit}")
            if window:
                return float(_window_days(window))
        self._fail(location, f"unit {unit!r} does not fit {fact!r} (in {spec.unit})")
        return None

    # -- mappings ------------------------------------------------------------------------------
    def _parse_mapping(self, data: dict[str, Any], location: tuple[str | int, ...]) -> Node | None:
        keys = set(data)
        for combinator, cls in (("all", All), ("any", AnyOf)):
            if combinator in keys:
                if keys != {combinator}:
                    self._fail(location, f"'{combinator}' must stand alone, found also {sorted(keys - {combinator})}")
                    return None
                items = data[combinator]
                if not isinstance(items, list) or not items:
                    self._fail(location + (combinator,), f"'{combinator}' takes a non-empty list")
                    return None
                nodes = [self.parse(item, location + (combinator, i)) for i, item in enumerate(items)]
                return cls([n for n in nodes if n is not None])
        if "not" in keys:
            if keys != {"not"}:
                self._fail(location, "'not' must stand alone")
                return None
            inner = self.parse(data["not"], location + ("not",))
            return Not(inner) if inner is not None else None
        if "undecided" in keys:
            if keys != {"undecided"}:
                self._fail(location, "'undecided' must stand alone")
                return None
            inner = self.parse(data["undecided"], location + ("undecided",))
            if inner is None:
                return None
            if not (isinstance(inner, Compare) and inner.bounded and inner.op in _ORDER_OPS):
                self._fail(location + ("undecided",),
                           "'undecided' takes one comparison (< <= > >=) of a lab fact, e.g. 'egfr < metformin_egfr_stop'")
                return None
            return Undecided(inner)
        if "ref" in keys:
            return self._definition(str(data["ref"]), location + ("ref",))
        if "fact" in keys:
            ops = [k for k in keys if k in _NEGATE]
            if len(ops) != 1 or keys - {"fact", *ops}:
                self._fail(location, "a 'fact' condition has exactly one of eq ne lt lte gt gte")
                return None
            return self._compare(str(data["fact"]), ops[0], data[ops[0]], location + (ops[0],))
        for kind, statuses in (
            ("condition", ("active", "history")),
            ("medication", ("active", "drafted", "any", "allergy", "active-or-drafted")),
            ("procedure", ("active",)),
            ("device", ("active",)),
        ):
            if kind in keys:
                return self._coded(kind, statuses, data, location)
        self._fail(location, f"unknown condition keys {sorted(keys)}")
        return None

    def _coded(self, kind: str, statuses: tuple[str, ...], data: dict[str, Any], location: tuple[str | int, ...]) -> Node | None:
        extra = set(data) - {kind, "status", "within"}
        if extra:
            self._fail(location, f"unknown keys {sorted(extra)} in a {kind} condition")
            return None
        vs_id = str(data[kind])
        vs = self.valuesets.get(vs_id)
        if vs is None:
            self._fail(location + (kind,), f"unknown value set {vs_id!r}")
            return None
        vs_kind = "medication" if kind == "medication" else kind
        if vs.kind != vs_kind:
            self._fail(location + (kind,), f"value set {vs_id!r} is of kind {vs.kind}, not {kind}")
            return None
        self.used_valuesets.add(vs_id)
        status = str(data.get("status", "active"))
        if status not in statuses:
            self._fail(location + ("status",), f"status {status!r} is not one of {', '.join(statuses)}")
            return None
        title = getattr(vs, "title", vs_id)
        if status == "active-or-drafted":
            node: Node = AnyOf([
                Compare(fact_key(vs_id, "active"), "eq", True, "bool", "true", f"active {title}"),
                Compare(fact_key(vs_id, "drafted"), "eq", True, "bool", "true", f"drafted {title}"),
            ])
        else:
            label = {"active": f"active {title}", "history": f"{title} (any status)", "drafted": f"drafted {title}",
                     "any": f"{title} (any status)", "allergy": f"allergy to {title}"}[status]
            node = Compare(fact_key(vs_id, status), "eq", True, "bool", "true", label)
        if "within" in data:
            window = _WINDOW.match(str(data["within"]))
            if not window:
                self._fail(location + ("within",), f"'within' takes e.g. '24 months' or '90 days', not {data['within']!r}")
                return None
            days = _window_days(window)
            day_fact = {"condition": fact_key(vs_id, "active_days" if status == "active" else "days")}.get(
                kind, fact_key(vs_id, "days")
            )
            if day_fact not in self.catalog:
                self._fail(location + ("within",), f"{kind} value set {vs_id!r} has no dates to window")
                return None
            # An undated record may be recent: unknown days count as inside the window (safe for the
            # exclusions that use windows: pregnancy, recent hypoglycaemia, rituximab, referral).
            node = All([node, AnyOf([
                Compare(day_fact, "lte", float(days), "number", str(data["within"])),
                Compare(f"{day_fact}_known", "eq", False, "bool", "false", f"{day_fact} undated"),
            ])])
        return node

    def _definition(self, name: str, location: tuple[str | int, ...]) -> Node | None:
        if name in self._resolved:
            self.used_definitions.add(name)
            return Ref(name, self._resolved[name])
        spec = self.definitions.get(name)
        if spec is None:
            self._fail(location, f"unknown definition {name!r}")
            return None
        if name in self._resolving:
            self._fail(location, f"definition {name!r} refers to itself")
            return None
        self._resolving.add(name)
        inner = self.parse(spec.when, ("definitions", name, "when"))
        self._resolving.discard(name)
        if inner is None:
            return None
        self._resolved[name] = inner
        self.used_definitions.add(name)
        return Ref(name, inner)


def _window_days(match: re.Match[str]) -> int:
    amount, unit = int(match.group(1)), match.group(2)
    if unit in ("day", "days", "d"):
        return amount
    if unit in ("year", "years", "a"):
        return round(amount * 365.25)
    return round(amount * DAYS_PER_MONTH)
