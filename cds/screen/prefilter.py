"""Stage 1 of a screen: does a patient have at least one resource any loaded rule can read?

Most of a population has nothing any SIR pathway reads; evaluating them fully would cost ~15 ms each
for no card. This first pass looks at each raw resource once, while the input is streamed, and asks
the same question the fact builders ask of it: does its concept belong to a value set of the loaded
ruleset? The answer comes from the engine's own :class:`cds.facts.matching.ConceptMatcher` over the
ruleset's value-set registry (codes, ICD prefixes, names, exclusions, RxNorm product displays: the
labs in ``labs.yaml`` are value sets too) plus the codes the fact builders read outside value sets
(the NYHA class LOINC, imported from :mod:`cds.facts.special`), so no list of codes is written here
and an edited value set changes the first pass with it.

It is deliberately generous (sound, not tight): every CodeableConcept at the top level of a resource
of a type the facts read is tried against value sets of every kind; a resource whose concept is
malformed, or a medication given by reference (resolved only later), counts as readable, so the full
evaluation sees it and reports what is wrong. The proof that it drops no card is a test
(``tests/screen/test_first_pass.py``): every patient it drops, evaluated fully, gets no card.
"""

from __future__ import annotations

from typing import Any

from cds.facts.matching import ConceptMatcher
from cds.facts.special import NYHA_LOINC
from cds.fhir.ingest import RELEVANT_TYPES, wellformed_concept
from cds.rules.model import RuleSet

__all__ = ["Prefilter"]

_MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationStatement", "MedicationAdministration"})
_EXTRA_CODES = frozenset({NYHA_LOINC})


def _concepts(resource: dict[str, Any]) -> list[Any]:
    """Top-level CodeableConcepts (and Observation component codes) of a resource."""
    found: list[Any] = []
    for key, value in resource.items():
        if key in ("meta", "text", "contained", "extension", "identifier"):
            continue
        if isinstance(value, dict) and ("coding" in value or "text" in value) and key != "valueString":
            found.append(value)
        elif isinstance(value, list):
            found.extend(item for item in value if isinstance(item, dict) and "coding" in item)
    for component in resource.get("component") or ():
        if isinstance(component, dict) and isinstance(component.get("code"), dict):
            found.append(component["code"])
    return found


class Prefilter:
    """The first pass, built from one loaded :class:`cds.rules.model.RuleSet`."""

    #: Resource types stage 1 looks at: the ones the fact builders read (``cds.fhir.ingest``).
    TYPES = frozenset(RELEVANT_TYPES - {"Patient", "Medication"})

    def __init__(self, ruleset: RuleSet) -> None:
        self.digest = ruleset.digest
        self.matcher = ConceptMatcher(ruleset.valuesets)
        self.kinds = tuple(sorted({vs.kind for vs in ruleset.valuesets.values()}))
        self.valuesets = len(ruleset.valuesets)

    def _concept_readable(self, concept: Any) -> bool:
        if not wellformed_concept(concept):
            return True  # cannot be judged irrelevant: the full evaluation names the problem
        for coding in concept.get("coding") or ():
            if coding.get("code") in _EXTRA_CODES:
                return True
        return any(self.matcher.match(kind, concept) for kind in self.kinds)

    def readable(self, resource: dict[str, Any]) -> bool:
        """Whether any loaded rule can read this resource (see the module docstring)."""
        rtype = resource.get("resourceType")
        if rtype not in self.TYPES:
            return False
        if rtype in _MEDICATION_TYPES and "medicationReference" in resource:
            return True  # the Medication is resolved later; keep the patient for the full evaluation
        return any(self._concept_readable(concept) for concept in _concepts(resource))

    def describe(self) -> dict[str, Any]:
        """For summary.json: what the first pass was derived from."""
        return {"valuesets": self.valuesets, "kinds": list(self.kinds), "resource_types": sorted(self.TYPES),
                "extra_codes": sorted(_EXTRA_CODES)}
