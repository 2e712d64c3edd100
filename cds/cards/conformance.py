"""CDS Hooks 2.0 card rules that the models alone cannot express, checked in one place.

Several suggestions marked ``isRecommended`` are allowed only under ``selectionBehavior: "any"``
(catalogue v3 issue item 5). Under ``at-most-one`` the clinician may take one suggestion at most, so
recommending two of them asks for something the EHR will not let them do: the client may reject the
card or silently keep one, and the recommended safety action can be lost.

Why refuse instead of repairing at render time: switching such a card to ``any`` would let a user
accept suggestions the author wrote as alternatives (e.g. "remove the order" and "switch to the
pen"), and quietly dropping one ``isRecommended`` flag changes what the card recommends. Neither is a
decision the engine should make for the author. So the check runs twice:

* at authoring time, ``cds rules validate`` refuses a rule whose card *can* render two recommended
  suggestions without ``selection: any`` (:func:`spec_problem`, a static check over the card's
  suggestion list, true whatever the patient: a rendered card only ever drops suggestions);
* at render time, the :class:`cds.cards.models.Card` model refuses such a card
  (:func:`card_problem`), a last line of defence that a validated ruleset never reaches.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["card_problem", "spec_problem"]

_RULE = (
    "CDS Hooks 2.0 allows several suggestions marked isRecommended only with selectionBehavior 'any'"
)


def _problem(recommended: list[str], selection: str | None) -> str | None:
    if len(recommended) > 1 and selection != "any":
        chosen = selection or "at-most-one (the default)"
        return (f"{len(recommended)} suggestions are recommended ({'; '.join(recommended)}) under "
                f"selectionBehavior {chosen}: {_RULE}")
    return None


def card_problem(suggestions: Iterable[tuple[str, bool | None]], selection: str | None) -> str | None:
    """The conformance problem of a rendered card, or None. ``suggestions`` = (label, isRecommended)."""
    return _problem([label for label, recommended in suggestions if recommended], selection)


def spec_problem(suggestions: Iterable[tuple[str, bool | None]], selection: str | None) -> str | None:
    """The problem of a card *spec* (rule file), or None, with the fix the author can make."""
    problem = _problem([label for label, recommended in suggestions if recommended], selection)
    if problem is None:
        return None
    return (problem + ". Set `selection: any` on the card if the suggestions can all be taken together, "
            "otherwise mark only one of them `recommended: true`")
