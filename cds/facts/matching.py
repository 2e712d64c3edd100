"""Which value sets a FHIR CodeableConcept belongs to, per kind, memoised.

Matching one concept against every value set (codes, ICD prefixes, exclusions, name patterns) is the
engine's hottest path: a Synthea patient carries hundreds of coded resources and the same codes and
drug names recur within a patient and across patients. The answer depends only on the concept's
codings and text, so it is cached by that fingerprint (bounded, per loaded RuleSet: a reload gets a
fresh matcher, so an edited value set can never be answered from a stale cache).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["ConceptMatcher"]


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

    def __init__(self, valuesets: dict[str, Any]) -> None:
        self._by_kind: dict[str, list[tuple[str, Any]]] = {}
        for vs_id, vs in valuesets.items():
            self._by_kind.setdefault(vs.kind, []).append((vs_id, vs))
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
        result = tuple(vs_id for vs_id, vs in self._by_kind.get(kind, ()) if vs.matches_concept(concept))
        if key is not None:
            with self._lock:
                if len(self._cache) >= self.LIMIT:
                    self._cache.clear()
                self._cache[key] = result
        return result
