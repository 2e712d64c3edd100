"""CDS Hooks 2.0 response models (cds-hooks.hl7.org/2.0, "CDS Service Response").

Optional fields are omitted, never sent as null/""/[] (the spec forbids empty values), so every
``model_dump`` goes through :meth:`CDSModel.to_json`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cds.cards.conformance import card_problem

__all__ = ["Action", "Card", "CdsResponse", "Coding", "Link", "Source", "Suggestion"]


class CDSModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Coding(CDSModel):
    system: str | None = None
    code: str
    display: str | None = None
    version: str | None = None


class Source(CDSModel):
    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(CDSModel):
    type: Literal["create", "update", "delete"]
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = None
    resourceId: str | None = None


class Suggestion(CDSModel):
    label: str = Field(min_length=1)
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(CDSModel):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(CDSModel):
    uuid: str | None = None
    summary: str = Field(min_length=1, max_length=139)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None

    @field_validator("selectionBehavior")
    @classmethod
    def _needs_suggestions(cls, value: str | None, info: Any) -> str | None:
        if value is not None and not info.data.get("suggestions"):
            raise ValueError("selectionBehavior is only allowed with suggestions")
        return value

    @model_validator(mode="after")
    def _recommended_needs_any(self) -> Card:
        """Several isRecommended suggestions only with selectionBehavior "any" (cds/cards/conformance.py)."""
        problem = card_problem(((s.label, s.isRecommended) for s in self.suggestions or []), self.selectionBehavior)
        if problem is not None:
            raise ValueError(problem)
        return self


class CdsResponse(CDSModel):
    cards: list[Card] = Field(default_factory=list)
    systemActions: list[Action] | None = None

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body.setdefault("cards", [])
        return body
