"""Which value sets a FHIR CodeableConcept belongs to, per kind, memoised.

Matching one concept against every value set (codes, ICD prefixes, exclusions, name patterns) is the
engine's hottest path: a Synthea patient carries hundreds of coded resources and the same codes and
drug names recur within a patient and across patients. The answer depends only on the concept's
codings and text, so it is cached by that fingerprint (bounded, per loaded RuleSet: a reload gets a
fresh matcher, so an edited value set can never be answered from a stale cache).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from cds.valuesets import ProductIndex, load_product_index, valueset_vetoes

__all__ = ["ConceptMatcher", "with_product_displays"]

_RXNORM_SYSTEMS = frozenset({
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://www.nlm.nih.gov/research/umls/rxnorm/",
    "urn:oid:2.16.840.1.113883.6.88",
})


def with_product_displays(concept: dict[str, Any], index: ProductIndex) -> dict[str, Any]:
    """Identity route 2 (pathways.md 1): an RxNorm product code found in the vendored expansions
    brings its expansion display (which names every ingredient), so a code sent without a display, or
    with a local one, still matches each ingredient's value set by name."""
    extra: list[dict[str, Any]] = []
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and coding.get("system") in _RXNORM_SYSTEMS and isinstance(coding.get("code"), str):
            display = index.display(coding["code"].strip())
            if display and display != coding.get("display"):
                extra.append({"display": display})
    if not extra:
        return concept
    return {**concept, "coding": [*(concept.get("coding") or ()), *extra]}


def _fingerprint(concept: dict[str, Any]) -> tuple[Any, ...]:
    codings = concept.get("coding") or ()
    return (
        concept.get("text"),
        tuple(
            (c.get("system"), c.get("code"), c.get("display")) if isinstance(c, dict) else repr(c)
            for c in codings
        ),
    )


class ConceptMatcher:
    """Memoised ``concept -> value set ids`` of one kind (condition, medication, observation...)."""

    LIMIT = 50_000

    def __init__(self, valuesets: dict[str, Any], products: ProductIndex | None = None) -> None:
        self._by_kind: dict[str, list[tuple[str, Any]]] = {}
        for vs_id, vs in valuesets.items():
            self._by_kind.setdefault(vs.kind, []).append((vs_id, vs))
        if products is None:
            folders = {Path(vs.path).parent for vs in valuesets.values() if getattr(vs, "path", None)}
            products = load_product_index(next(iter(folders))) if len(folders) == 1 else ProductIndex()
        self.products = products
        self._cache: dict[tuple[str, tuple[Any, ...]], tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def match(self, kind: str, concept: Any) -> tuple[str, ...]:
        """Ids of the value sets of ``kind`` that contain ``concept`` (empty for a non-concept)."""
        if not isinstance(concept, dict):
            return ()
        try:
            key = (kind, _fingerprint(concept))
            hit = self._cache.get(key)
        except TypeError:  # unhashable junk inside a coding: match without caching
            key, hit = None, None
        if hit is not None:
            return hit
        probe = with_product_displays(concept, self.products) if kind == "medication" and len(self.products) else concept
        result = tuple(vs_id for vs_id, vs in self._by_kind.get(kind, ()) if vs.matches_concept(probe))
        if key is not None:
            with self._lock:
                if len(self._cache) >= self.LIMIT:
                    self._cache.clear()
                self._cache[key] = result
        return result

    def vetoed(self, kind: str, concept: Any) -> tuple[str, ...]:
        """Ids of the value sets of ``kind`` whose exclusions reject ``concept`` (not memoised: only
        asked for a product that also lists ingredients, which is rare)."""
        if not isinstance(concept, dict):
            return ()
        return tuple(vs_id for vs_id, vs in self._by_kind.get(kind, ()) if valueset_vetoes(vs, concept))

    def match_medication(self, product: Any, ingredients: list[dict[str, Any]]) -> tuple[str, ...]:
        """Medication identity over every route (pathways.md 1): the product concept (its codes, then
        its names), plus each ingredient concept (RxNorm IN/PIN/MIN code or ingredient name). A value
        set that excludes the product itself ("hydrocortisone cream") is not matched through its
        ingredients."""
        hits = list(self.match("medication", product))
        if ingredients:
            vetoed = set(self.vetoed("medication", product))
            for concept in ingredients:
                for vs_id in self.match("medication", concept):
                    if vs_id not in hits and vs_id not in vetoed:
                        hits.append(vs_id)
        return tuple(hits)
