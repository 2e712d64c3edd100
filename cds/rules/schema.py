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
    "ATTRIBUTE_USES",
    "ActionSpec",
    "ApprovalSpec",
    "AttributeUse",
    "AttributeUses",
    "Criterion4Spec",
    "InputSpec",
    "SourceAttributes",
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
    detail: str = Field(min_length=5, description="Jinja template producing Markdown: at most about 8 short lines "
                        "(the decisive values with dates, the one-sentence reason, the next step)")
    more: str | None = Field(default=None, description="Jinja template producing Markdown: the longer explanation "
                             "(dosing details, supporting features, what else to consider), shown on the "
                             "'why this card' page and in the catalogue, not in the EHR panel")
    suggestions: list[SuggestionSpec] = Field(default_factory=list)
    selection: Literal["at-most-one", "any"] | None = None


ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_date(value: str) -> str:
    """A calendar date written YYYY-MM-DD (checked as a real date: 2026-02-30 is refused)."""
    from datetime import date

    if not ISO_DATE.match(value):
        raise ValueError("date must be YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not a calendar date: {exc}") from None
    return value


class AttributeUse(_Strict):
    """Whether one patient data element (HTI-1 (b)(11)(iv)(A)(5)-(13)) is used by the rule, and how."""

    used: bool
    how: str = Field(min_length=3, description="how it is used (or, when not used, what the rule does instead)")


# HTI-1 45 CFR 170.315(b)(11)(iv)(A)(5)-(13), in the regulation's order: field name -> (paragraph, label).
ATTRIBUTE_USES: dict[str, tuple[str, str]] = {
    "race": ("(5)", "Race"),
    "ethnicity": ("(6)", "Ethnicity"),
    "language": ("(7)", "Language"),
    "sexual_orientation": ("(8)", "Sexual orientation"),
    "gender_identity": ("(9)", "Gender identity"),
    "sex": ("(10)", "Sex"),
    "date_of_birth": ("(11)", "Date of birth"),
    "social_determinants_of_health": ("(12)", "Social determinants of health data"),
    "health_status_assessments": ("(13)", "Health status assessments data"),
}


class AttributeUses(_Strict):
    """HTI-1 (b)(11)(iv)(A)(5)-(13): each data element, used or not, and how. Every one is required."""

    race: AttributeUse
    ethnicity: AttributeUse
    language: AttributeUse
    sexual_orientation: AttributeUse
    gender_identity: AttributeUse
    sex: AttributeUse
    date_of_birth: AttributeUse
    social_determinants_of_health: AttributeUse
    health_status_assessments: AttributeUse


class SourceAttributes(_Strict):
    """ONC HTI-1 decision-support source attributes, 45 CFR 170.315(b)(11)(iv)(A)(1)-(13).

    Why a block of its own: a safety committee (and a certified EHR that shows source attributes to
    its users) reads the same answers for every rule, in the regulation's order, and a missing answer
    is a validation error rather than a blank in the catalogue.
    """

    citation: str = Field(min_length=10, description="(1) bibliographic citation of the intervention")
    developer: str = Field(min_length=3, description="(2) developer of the intervention (who translated the guideline)")
    funding: str = Field(min_length=3, description="(3) funding source of the technical implementation")
    released: str = Field(description="(4) release date of the intervention, YYYY-MM-DD")
    revised: str | None = Field(default=None, description="(4) latest revision date, YYYY-MM-DD, if revised")
    uses: AttributeUses = Field(description="(5)-(13) use of race, ethnicity, ... health status assessments")

    @field_validator("released", "revised")
    @classmethod
    def _dates(cls, value: str | None) -> str | None:
        return None if value is None else _iso_date(value)

    @model_validator(mode="after")
    def _revised_after_release(self) -> SourceAttributes:
        if self.revised is not None and self.revised < self.released:
            raise ValueError(f"revised ({self.revised}) is before released ({self.released})")
        return self


class InputSpec(_Strict):
    """One required input (FDA CDS guidance criterion 4 b): what, how to obtain it, why it matters."""

    input: str = Field(min_length=3)
    how_to_obtain: str = Field(min_length=5, description="plain-language instruction, incl. data quality needs")
    relevance: str | None = None


class Criterion4Spec(_Strict):
    """The basis of the recommendation an HCP can review (FDA CDS guidance 2022, criterion 4 a-c).

    The known limitations are the rule's ``limitations`` field (criterion 4 c(iii)/d), kept there so
    there is one place to write them; :meth:`RuleSpec.transparency` puts them in this section.
    """

    intended_use: str = Field(min_length=10, description="a) purpose of the rule")
    intended_user: str = Field(min_length=5, description="a) the intended health care professional user")
    patient_population: str = Field(min_length=5, description="a) the intended patient population")
    inputs: list[InputSpec] = Field(min_length=1, description="b) required input medical information")
    logic: str = Field(min_length=10, description="c)(i) the logic in plain language")
    validation: str = Field(min_length=10, description="c)(ii)-(iii) the evidence and how the rule was tested")


class ApprovalSpec(_Strict):
    """Clinical sign-off: who approved this version, when, and when it is next reviewed."""

    approved_by: str = Field(min_length=3)
    approved_on: str = Field(description="YYYY-MM-DD")
    next_review: str = Field(description="YYYY-MM-DD, after approved_on")

    @field_validator("approved_on", "next_review")
    @classmethod
    def _dates(cls, value: str) -> str:
        return _iso_date(value)

    @model_validator(mode="after")
    def _review_after_approval(self) -> ApprovalSpec:
        if self.next_review <= self.approved_on:
            raise ValueError(f"next_review ({self.next_review}) must be after approved_on ({self.approved_on})")
        return self


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
    source_attributes: SourceAttributes = Field(
        description="ONC HTI-1 source attributes, 45 CFR 170.315(b)(11)(iv)(A)(1)-(13); required")
    fda_criterion_4: Criterion4Spec = Field(description="FDA CDS guidance criterion 4 basis; required")
    approval: ApprovalSpec | None = Field(default=None, description="required for active rules; optional for drafts")

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

    @model_validator(mode="after")
    def _active_rules_are_signed(self) -> RuleSpec:
        """An active rule reaches clinicians: it needs a sign-off and written limitations."""
        if self.status == "active":
            if self.approval is None:
                raise ValueError("approval: an active rule needs approval (approved_by, approved_on, next_review)")
            if not (self.limitations or "").strip():
                raise ValueError("limitations: an active rule needs its known limitations (FDA CDS criterion 4)")
        return self

    def transparency(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Source attributes, criterion-4 basis and approval as (section, [(label, text)]) for display.

        One ordering and wording for every reader (the catalogue, the "why this card" page), so the
        committee and the clinician see the same answers under the same labels.
        """
        sa, c4 = self.source_attributes, self.fda_criterion_4
        attributes = [
            ("(1) Bibliographic citation", sa.citation),
            ("(2) Developer of the intervention", sa.developer),
            ("(3) Funding source of the technical implementation", sa.funding),
            ("(4) Release date", sa.released),
            ("(4) Revision date", sa.revised or "not revised since release"),
        ]
        for name, (paragraph, label) in ATTRIBUTE_USES.items():
            use: AttributeUse = getattr(sa.uses, name)
            attributes.append((f"{paragraph} {label}", f"{'Used' if use.used else 'Not used'}: {use.how}"))
        basis = [
            ("Intended use", c4.intended_use),
            ("Intended user", c4.intended_user),
            ("Patient population", c4.patient_population),
            *[(f"Input: {i.input}", i.how_to_obtain + (f" ({i.relevance})" if i.relevance else ""))
              for i in c4.inputs],
            ("Logic", c4.logic),
            ("Development and validation", c4.validation),
            ("Known limitations", (self.limitations or "none stated").strip()),
        ]
        sections = [
            ("Source attributes (ONC HTI-1, 45 CFR 170.315(b)(11)(iv)(A))", attributes),
            ("Basis of the recommendation (FDA CDS guidance, criterion 4)", basis),
        ]
        if self.approval is not None:
            sections.append(("Approval", [("Approved by", self.approval.approved_by),
                                          ("Approved on", self.approval.approved_on),
                                          ("Next review", self.approval.next_review)]))
        return sections


class DefinitionSpec(_Strict):
    description: str = Field(min_length=5)
    when: ConditionData
    source: str | None = None


class DefinitionsFile(_Strict):
    """``rulesets/definitions.yaml``: shared thresholds and named conditions used by several rules."""

    thresholds: dict[str, ThresholdSpec] = Field(default_factory=dict)
    definitions: dict[str, DefinitionSpec] = Field(default_factory=dict)
