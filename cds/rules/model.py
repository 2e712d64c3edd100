"""The loaded rule model: :class:`Issue`, :class:`LoadedRule`, :class:`RuleSet`.

A module of its own so that every stage can name these types without importing the code that
produces or checks them: the loader (:mod:`cds.rules.loader`) builds them, the validators
(:mod:`cds.rules.validators`), the compiler (:mod:`cds.rules.compile`), the engine and the authoring
tools read them. It imports nothing from those modules, so no import circle can pass through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing this module costs nothing and pulls in no stage
    from cds.facts.labs import LabCatalog
    from cds.facts.models import FactSpec
    from cds.rules.conditions import Node
    from cds.rules.schema import DefinitionsFile, RuleSpec
    from cds.rules.yamlsource import LoadedYaml

__all__ = ["Issue", "LoadedRule", "RuleSet"]


@dataclass(frozen=True)
class Issue:
    """One validation problem, located."""

    file: str
    line: int
    rule: str | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        rule = f" [{self.rule}]" if self.rule else ""
        return f"{self.file}:{self.line}:{rule} {self.severity}: {self.message}"


@dataclass
class LoadedRule:
    """A rule file parsed and its conditions resolved against the fact vocabulary."""

    spec: RuleSpec
    source: LoadedYaml
    when: Node | None
    card_conditions: list[Node | None]
    suggestion_conditions: list[list[Node | None]] = field(default_factory=list)  # [card][suggestion]
    used_thresholds: set[str] = field(default_factory=set)
    used_valuesets: set[str] = field(default_factory=set)
    used_definitions: set[str] = field(default_factory=set)

    @property
    def path(self) -> Path:
        return self.source.path


@dataclass
class RuleSet:
    """Everything the engine needs from a rulesets folder.

    ``issues`` holds what loading found (syntax, schema, unknown names in conditions). The deeper
    checks (templates, FHIR rendering, durable_rules limits, rule tests) are added by whoever asks for
    them: :func:`cds.authoring.gate.validate_ruleset`.
    """

    directory: Path
    valuesets: dict[str, Any]
    labs: LabCatalog
    catalog: dict[str, FactSpec]
    definitions: DefinitionsFile
    rules: list[LoadedRule]
    digest: str
    issues: list[Issue] = field(default_factory=list)
    definition_nodes: dict[str, Node] = field(default_factory=dict)  # name -> parsed condition
    full_digest: str = ""  # the whole SHA-256 of which ``digest`` is the first 16 hex digits
    validated: bool = False  # the validators and rule-test checks have added their issues

    def rule(self, rule_id: str) -> LoadedRule:
        for rule in self.rules:
            if rule.spec.id == rule_id:
                return rule
        raise KeyError(rule_id)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]
