"""The rule file format, as pydantic models (exported as JSON Schema by ``cds rules schema``).

One rule per YAML file in ``rulesets/rules/``. Keys in reading order: what the rule is (id, title,
version, status, description), where it applies (hooks), why it is right (source, evidence,
thresholds), when it fires (``when`` + each card's ``when``), and what it says (cards). Conditions are
kept as plain data here and parsed by :mod:`cds.rules.conditions`, which knows the fact vocabulary.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cds.codesystems import OVERRIDE_REASON_SYSTEM

__all__ = [
    "ActionSpec",
    "CardSpec",
    "DefinitionsFile",
    "LinkSpec",
    "OverrideReasonSpec",
    "Reference",
    "RuleSpec",
    "SuggestionSpec",
    "ThresholdSpec",
]

HookName = Literal["patient-view", "order-select", "order-sign"]
Indicator = Literal["info", "warning", "critical"]
INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}
RULE_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


def _semver(value: str) -> str:
    """One check for every ``version`` (a rule's and its changelog entries'), one message."""
    if not SEMVER.match(value):
        raise ValueError("version must be MAJOR.MINOR.PATCH, e.g. 1.1.0")
    return value

ConditionData = Any  # str | dict | list: parsed by cds.rules.conditions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reference(_Strict):
    """A guideline, label or paper behind a rule."""

    label: str = Field(min_length=3)
    url: str | None = Field(default=None, pattern=r"^https?://")
    note: str | None = None


class ThresholdSpec(_Strict):
    """A named clinical threshold: its value, unit and where it comes from (required)."""

    value: float
    unit: str | None = Field(default=None, description="UCUM-style unit; required for measured facts")
    source: str = Field(min_length=3, description="guideline/label/paper that sets this value")
    note: str | None = None


class ActionSpec(_Strict):
    """One suggestion action: create a resource, delete drafted orders, or stop active ones."""

    description: str | None = None
    create: dict[str, Any] | None = Field(default=None, description="FHIR R4 resource template (Jinja strings)")
    delete_drafts: str | None = Field(default=None, description="value set id: delete each drafted order of it")
    stop_active: str | None = Field(default=None, description="value set id: update each active request to stopped")

    @field_validator("stop_active")
    @classmethod
    def _one_kind(cls, value: str | None, info: Any) -> str | None:
        given = [k for k in ("create", "delete_drafts") if info.data.get(k) is not None]
        if value is not None:
            given.append("stop_active")
        if len(given) > 1:
            raise ValueError(f"an action has exactly one of create/delete_drafts/stop_active, not {given}")
        return value


class SuggestionSpec(_Strict):
    label: str = Field(min_length=3)
    recommended: bool | None = None
    when: ConditionData = Field(
        default=None, description="offer this suggestion only when this condition also holds (e.g. no recent value)"
    )
    actions: list[ActionSpec] = Field(min_length=1)


class LinkSpec(_Strict):
    label: str
    url: str = Field(pattern=r"^https?://")
    type: Literal["absolute", "smart"] = "absolute"


class OverrideReasonSpec(_Strict):
    code: str
    display: str
    system: str = OVERRIDE_REASON_SYSTEM


class CardSpec(_Strict):
    """One possible card of a rule. Of the cards whose conditions hold, the highest indicator wins."""

    indicator: Indicator
    hooks: list[HookName] | None = Field(default=None, description="narrower than the rule's hooks")
    when: ConditionData = None
    summary: str = Field(min_length=5, description="Jinja template; rendered text must be < 140 characters")
    detail: str = Field(min_length=5, description="Jinja template producing Markdown")
    suggestions: list[SuggestionSpec] = Field(default_factory=list)
    selection: Literal["at-most-one", "any"] | None = None


class ChangelogEntry(_Strict):
    """One line of a rule's history: the version it introduced and what changed clinically or in wording."""

    version: str
    date: str = Field(description="YYYY-MM-DD")
    change: str = Field(min_length=5)

    @field_validator("version")
    @classmethod
    def _version_format(cls, value: str) -> str:
        return _semver(value)

    @field_validator("date")
    @classmethod
    def _date_format(cls, value: str) -> str:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError("date must be YYYY-MM-DD")
        return value


class RuleSpec(_Strict):
    """A rule file."""

    id: str = Field(description="stable public id, kebab-case; equals the file stem")
    title: str = Field(min_length=5)
    version: str = Field(description="semantic version, bumped on every clinical change")
    status: Literal["draft", "active", "retired"]
    description: str = Field(min_length=10)
    hooks: list[HookName] = Field(min_length=1)
    source: Reference = Field(description="the card's source (shown to the clinician)")
    evidence: list[Reference] = Field(min_length=1, description="every reference behind the rule")
    thresholds: dict[str, ThresholdSpec] = Field(default_factory=dict)
    when: ConditionData = None
    cards: list[CardSpec] = Field(min_length=1)
    links: list[LinkSpec] = Field(default_factory=list)
    override_reasons: list[OverrideReasonSpec] = Field(default_factory=list)
    limitations: str | None = None
    author: str | None = None
    changelog: list[ChangelogEntry] = Field(
        default_factory=list, description="newest first; the first entry's version equals the rule's version"
    )

    @field_validator("id")
    @classmethod
    def _id_format(cls, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValueError("rule id must be kebab-case: lower-case letters, digits and single hyphens")
        return value

    @field_validator("version")
    @classmethod
    def _version_format(cls, value: str) -> str:
        return _semver(value)

    @model_validator(mode="after")
    def _changelog_matches_version(self) -> RuleSpec:
        """A bumped version without its changelog line (or the reverse) is the mistake this catches."""
        if self.changelog and self.changelog[0].version != self.version:
            raise ValueError(
                f"changelog: the newest entry is {self.changelog[0].version} but the rule's version is "
                f"{self.version}; add a changelog line for {self.version} at the top"
            )
        return self


class DefinitionSpec(_Strict):
    description: str = Field(min_length=5)
    when: ConditionData
    source: str | None = None


class DefinitionsFile(_Strict):
    """``rulesets/definitions.yaml``: shared thresholds and named conditions used by several rules."""

    thresholds: dict[str, ThresholdSpec] = Field(default_factory=dict)
    definitions: dict[str, DefinitionSpec] = Field(default_factory=dict)
