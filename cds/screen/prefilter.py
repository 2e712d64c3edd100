"""Stage 1 of a screen: a cheap first pass, derived from the loaded rules, that sets patients aside.

Most of a population has nothing any SIR pathway acts on, and a full evaluation costs 10-60 ms a
patient. The first pass looks at each raw resource once, while the input is streamed, and learns which
*classes* of record the patient has: the value sets of the loaded ruleset its concepts belong to (the
engine's own :class:`cds.facts.matching.ConceptMatcher` over the ruleset's value-set registry: codes,
ICD prefixes, names, exclusions, RxNorm product displays; the labs of ``labs.yaml`` are value sets
too), plus the NYHA class code the fact builders read outside value sets (imported from
:mod:`cds.facts.special`). No code list is written here: an edited value set changes the first pass.

Then, per patient, it asks whether *some card of some loaded rule could hold* on those classes. Every
card's full condition (hooks, the rule's ``when``, the card's ``when``) is expanded into the same
disjunctive normal form the compiler gives durable_rules (:func:`cds.rules.compile.to_dnf`), and
clauses of order-hook cards are left out (a screen evaluates ``patient-view`` only). A leaf
test needs a record only if it fails on a patient without records (checked against the facts the
fact builders produce for an empty record, so a default such as ``<x>_known = false`` is never taken
for data); it then needs one of the value sets that feed its fact (the lab's value sets, the coded
family's value set; for BMI also weight and height; for insulin doses the insulin value sets). A
shared definition (``def_<name> == true``) needs what one of its own clauses needs
(expanded into the card's alternatives; past ``MAX_ALTERNATIVES`` soundly approximated by one class out
of one group of each of its clauses). A fact the first pass cannot map (age, sex, text
rules such as HIV by name) needs nothing. So a patient is set aside only when no clause of any card
can be met by their records; when a clause needs no record at all, nobody is set aside.

Everything uncertain errs towards a full evaluation: a malformed concept, or a medication given by
reference (resolved only later), keeps the patient. The proof that it drops no card is a test
(``tests/screen/test_first_pass.py``): every patient it sets aside, evaluated fully, gets no card.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cds.facts.build import LIPODYSTROPHY_SETS, build_facts, fact_key
from cds.facts.matching import ConceptMatcher
from cds.facts.special import NYHA_LOINC
from cds.fhir.ingest import RELEVANT_TYPES, ingest, wellformed_concept
from cds.rules.compile import rule_condition, to_dnf
from cds.rules.conditions import definition_fact
from cds.rules.model import RuleSet

__all__ = ["ANY", "SCREEN_HOOK", "Prefilter"]

_MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationStatement", "MedicationAdministration"})
_CODED_SUFFIXES = ("active_days", "active", "history", "days", "drafted", "any", "allergy")
_NYHA = "code:nyha-class"
SCREEN_HOOK = "patient-view"  # the hook every patient of a screen is evaluated on
#: The class of a record whose concept cannot be judged: the patient is always evaluated fully.
ANY = "*"
_OPS = {"$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b, "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b, "$neq": lambda a, b: a != b}

MAX_ALTERNATIVES = 256  # per conjunction once definitions are expanded; beyond, approximated soundly
Group = frozenset[str]  # the requirement "one of these classes"
Clause = frozenset[Group]  # all of these groups


def _concepts(resource: dict[str, Any]) -> list[Any]:
    """Top-level CodeableConcepts (and Observation component codes) of a resource."""
    found: list[Any] = []
    for key, value in resource.items():
        if key in ("meta", "text", "contained", "extension", "identifier"):
            continue
        if isinstance(value, dict) and ("coding" in value or "text" in value):
            found.append(value)
        elif isinstance(value, list):
            found.extend(item for item in value if isinstance(item, dict) and "coding" in item)
    for component in resource.get("component") or ():
        if isinstance(component, dict) and isinstance(component.get("code"), dict):
            found.append(component["code"])
    if resource.get("resourceType") == "Device":  # an insulin pump is also recognised by its name (facts/meds.py)
        names = [n.get("name") for n in resource.get("deviceName") or () if isinstance(n, dict)]
        text = " ".join(str(n) for n in names if n)
        if text:
            found.append({"text": text})
    return found


def _fingerprint(concept: dict[str, Any]) -> tuple[Any, ...]:
    """What a concept's classes depend on: its text and its codings (as ConceptMatcher keys them)."""
    return (concept.get("text"), tuple((c.get("system"), c.get("code"), c.get("display")) if isinstance(c, dict)
                                       else repr(c) for c in concept.get("coding") or ()))


def _leaf_holds(leaf: dict[str, Any], values: dict[str, Any]) -> bool:
    key, expected = next(iter(leaf.items()))
    if key in _OPS:
        fact, threshold = next(iter(expected.items()))
        actual = values.get(fact)
        if actual is None or isinstance(actual, bool) != isinstance(threshold, bool):
            return False
        try:
            return bool(_OPS[key](actual, threshold))
        except TypeError:
            return False
    return key in values and values[key] == expected


class Prefilter:
    """The first pass, built from one loaded :class:`cds.rules.model.RuleSet` (see the module docstring).

    Per resource: :meth:`classes` (what it could feed; :meth:`readable` is "any"). Per patient:
    :meth:`selects` on the union of their resources' classes.
    """

    #: Resource types stage 1 looks at: the ones the fact builders read (``cds.fhir.ingest``).
    TYPES = frozenset(RELEVANT_TYPES - {"Patient", "Medication"})

    def __init__(self, ruleset: RuleSet, *, include_drafts: bool = False) -> None:
        self.digest = ruleset.digest
        self.matcher = ConceptMatcher(ruleset.valuesets)
        self._cache: dict[Any, frozenset[str]] = {}  # concept fingerprint -> classes (every kind at once)
        self.kinds = tuple(sorted({vs.kind for vs in ruleset.valuesets.values()}))
        self.valuesets = len(ruleset.valuesets)
        self._medication_classes = frozenset(
            vs_id for vs_id, vs in ruleset.valuesets.items() if vs.kind in ("medication", "device"))
        self._fact_groups = self._map_facts(ruleset)
        self._baseline = self._empty_record_values(ruleset)
        self.clauses, self.selects_everyone = self._derive(ruleset, include_drafts)

    # -- derivation (once per ruleset) ----------------------------------------------------------
    def _map_facts(self, ruleset: RuleSet) -> dict[str, Group]:
        """fact name -> the classes that can feed it (facts not listed need nothing of stage 1)."""
        groups: dict[str, Group] = {}
        labs = ruleset.labs.definitions
        lab_sets = {name: frozenset(d.valuesets + ([d.text_qualified.valueset] if d.text_qualified else []))
                    for name, d in labs.items()}
        if "bmi" in lab_sets:  # BMI is also computed from weight and height (facts/build.py)
            lab_sets["bmi"] |= lab_sets.get("weight", frozenset()) | lab_sets.get("height", frozenset())
        for fact in ruleset.catalog:
            owners = [name for name in labs if fact == name or fact.startswith(name + "_")]
            if owners:
                groups[fact] = lab_sets[max(owners, key=len)]
        for vs_id in ruleset.valuesets:
            for suffix in _CODED_SUFFIXES:
                name = fact_key(vs_id, suffix)
                groups[name] = groups[f"{name}_known"] = frozenset({vs_id})
        # Medication facts computed outside the coded families (facts/build.py, facts/meds.py), with the
        # value sets they are computed from; every medication/device value set if one is missing.
        insulin = frozenset(v for v in self._medication_classes if v.startswith("insulin"))
        derived = {("insulin_tdd", "insulin_u_per_kg", "insulin_u500_", "insulin_pump", "insulin_other_than_u500"): insulin,
                   ("oral_oestrogen_",): frozenset({"oestrogen-oral"}),
                   ("metreleptin_start_days",): frozenset({"metreleptin"}),
                   ("glucocorticoid_systemic_non_replacement", "hydrocortisone_replacement"):
                       frozenset({"glucocorticoid-systemic", "hydrocortisone"})}
        for prefixes, sets in derived.items():
            group = sets if sets and sets <= self._medication_classes else self._medication_classes
            for fact in ruleset.catalog:
                if fact.startswith(prefixes):
                    groups[fact] = group
        lipodystrophy = frozenset(LIPODYSTROPHY_SETS) & set(ruleset.valuesets)
        if lipodystrophy:  # HIV-associated lipodystrophy is a lipodystrophy record (facts/build.py)
            groups["lipodystrophy_hiv"] = lipodystrophy
        for fact in ("nyha_class", "nyha_class_known"):
            groups[fact] = frozenset({_NYHA})
        if "insulin-receptor-antibodies" in ruleset.valuesets:
            groups["insulin_receptor_antibody_positive"] = frozenset({"insulin-receptor-antibodies"})
        return groups

    def _empty_record_values(self, ruleset: RuleSet) -> dict[str, Any]:
        """The flat facts of a patient with no records: what every leaf sees without data."""
        record = ingest({"resourceType": "Bundle", "type": "collection",
                         "entry": [{"resource": {"resourceType": "Patient", "id": "stage-1"}}]}, hook="patient-view")
        facts = build_facts(record, valuesets=ruleset.valuesets, labs=ruleset.labs, catalog=ruleset.catalog,
                            now=datetime(2026, 1, 1, tzinfo=UTC), matcher=self.matcher)
        return dict(facts.values)

    def _leaf_group(self, leaf: dict[str, Any]) -> Group | None:
        """What one (non-definition) leaf needs: a group of classes, or None (it holds without records)."""
        if _leaf_holds(leaf, self._baseline):
            return None
        key, expected = next(iter(leaf.items()))
        fact = next(iter(expected)) if key in _OPS else key
        return self._fact_groups.get(fact)

    def _clauses(self, leaves: list[dict[str, Any]], definitions: dict[str, list[Clause] | None]) -> list[Clause]:
        """The requirement of one conjunction of leaves, as alternatives (definitions expanded)."""
        base = frozenset(g for leaf in leaves if not next(iter(leaf)).startswith("def_")
                         if (g := self._leaf_group(leaf)) is not None)
        result = [base]
        for leaf in leaves:
            key, expected = next(iter(leaf.items()))
            if not key.startswith("def_") or expected is not True or definitions.get(key) is None:
                continue  # a definition required false, or one that needs no record, needs nothing
            alternatives = definitions[key] or []
            if len(result) * len(alternatives) <= MAX_ALTERNATIVES:
                result = _minimal([c | d for c in result for d in alternatives])
            else:  # sound approximation: one class out of one group of each alternative
                picked = frozenset().union(*(min(d, key=lambda g: (len(g), sorted(g))) for d in alternatives))
                result = _minimal([c | {picked} for c in result])
        return result

    def _derive(self, ruleset: RuleSet, include_drafts: bool) -> tuple[list[Clause], bool]:
        from cds.engine import active_rules  # durable_rules itself is not imported by this

        definitions: dict[str, list[Clause] | None] = {}
        for layer in _layers(ruleset):
            for name in layer:
                alternatives = [c for leaves in to_dnf(ruleset.definition_nodes[name].compile())
                                for c in self._clauses(leaves, definitions)]
                needs_nothing = not alternatives or any(not c for c in alternatives)
                definitions[definition_fact(name)] = None if needs_nothing else _minimal(alternatives)
        found: list[Clause] = []
        for rule in active_rules(ruleset, include_drafts):
            for index in range(len(rule.spec.cards)):
                for leaves in to_dnf(rule_condition(rule, index).compile()):
                    if any(leaf.get("hook", SCREEN_HOOK) != SCREEN_HOOK for leaf in leaves):
                        continue  # an order-hook card: a screen evaluates patient-view only
                    for clause in self._clauses(leaves, definitions):
                        if not clause:
                            return [], True
                        found.append(clause)
        return sorted(_minimal(found), key=lambda c: (len(c), sorted(map(sorted, c)))), False

    # -- per resource, per patient -------------------------------------------------------------
    def _concept_classes(self, concept: Any) -> frozenset[str]:
        if not wellformed_concept(concept):
            return frozenset({ANY})  # cannot be judged irrelevant: the full evaluation names the problem
        try:
            key: Any = _fingerprint(concept)
            hit = self._cache.get(key)
        except TypeError:  # unhashable junk inside a coding: match without caching
            key, hit = None, None
        if hit is not None:
            return hit
        found: set[str] = set()
        for coding in concept.get("coding") or ():
            if coding.get("code") == NYHA_LOINC:
                found.add(_NYHA)
        for kind in self.kinds:
            found.update(self.matcher.match(kind, concept))
        result = frozenset(found)
        if key is not None:
            if len(self._cache) >= ConceptMatcher.LIMIT:
                self._cache.clear()
            self._cache[key] = result
        return result

    def classes(self, resource: dict[str, Any]) -> frozenset[str]:
        """The classes of record this resource is (empty: no rule can read it)."""
        if resource.get("resourceType") not in self.TYPES:
            return frozenset()
        found: set[str] = set()
        if resource.get("resourceType") in _MEDICATION_TYPES and "medicationReference" in resource:
            found |= self._medication_classes  # the Medication is resolved later: any drug it may be
        for concept in _concepts(resource):
            found |= self._concept_classes(concept)
        return frozenset(found)

    def readable(self, resource: dict[str, Any]) -> bool:
        """Whether any loaded rule can read this resource."""
        return bool(self.classes(resource))

    def selects(self, classes: set[str] | frozenset[str]) -> bool:
        """Whether a patient whose records have these classes goes through the full evaluation."""
        if self.selects_everyone or ANY in classes:
            return True
        return any(all(group & classes for group in clause) for clause in self.clauses)

    def describe(self) -> dict[str, Any]:
        """For summary.json: what the first pass was derived from."""
        return {"valuesets": self.valuesets, "card_clauses": len(self.clauses),
                "selects_everyone": self.selects_everyone, "resource_types": sorted(self.TYPES)}


def _minimal(clauses: list[Clause]) -> list[Clause]:
    """Distinct clauses, dropping any that demands more than another (it adds no way to be selected)."""
    unique = sorted(set(clauses), key=len)
    kept: list[Clause] = []
    for clause in unique:
        if not any(other <= clause for other in kept):
            kept.append(clause)
    return kept


def _layers(ruleset: RuleSet) -> list[list[str]]:
    from cds.rules.compile import definition_layers

    return definition_layers(ruleset.definition_nodes)
