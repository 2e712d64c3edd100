"""Load a rulesets folder: value sets, lab definitions, shared definitions and rule files.

Layout (paths relative to the folder)::

    valuesets/*.yaml        value sets (kind condition/medication/observation/procedure/device)
    labs.yaml               lab and body-measure facts: codes, canonical unit, look-back
    definitions.yaml        shared thresholds and named conditions ("sir_context", "diabetes"...)
    rules/*.yaml            one rule per file; tests beside it as <stem>.test.yaml

Loading collects *every* problem with file and line before failing, so one run of
``cds rules validate`` shows everything an informatician must fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cds._exceptions import RulesetError
from cds.facts.build import fact_catalog
from cds.facts.labs import LabCatalog, load_lab_catalog
from cds.facts.models import FactSpec
from cds.rules.conditions import ConditionParser, Node
from cds.rules.schema import DefinitionsFile, RuleSpec
from cds.rules.yamlsource import LoadedYaml, YamlSyntaxError, load_yaml
from cds.valuesets import ValueSetError, load_valuesets

__all__ = ["Issue", "LoadedRule", "RuleSet", "default_rulesets_dir", "load_ruleset"]


def default_rulesets_dir() -> Path:
    """The built-in rulesets: ``rulesets/`` at the repository root, beside the ``cds`` package."""
    return Path(__file__).resolve().parents[2] / "rulesets"


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
    """Everything the engine needs from a rulesets folder, validated."""

    directory: Path
    valuesets: dict[str, Any]
    labs: LabCatalog
    catalog: dict[str, FactSpec]
    definitions: DefinitionsFile
    rules: list[LoadedRule]
    digest: str
    issues: list[Issue] = field(default_factory=list)
    definition_nodes: dict[str, Node] = field(default_factory=dict)  # name -> parsed condition

    def rule(self, rule_id: str) -> LoadedRule:
        for rule in self.rules:
            if rule.spec.id == rule_id:
                return rule
        raise KeyError(rule_id)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]


def _digest(directory: Path) -> str:
    """Content hash of every file that shapes behaviour: the ruleset's identity for reloads/audit."""
    sha = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".json", ".csv"):
            sha.update(str(path.relative_to(directory)).encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()[:16]


def _pydantic_issues(exc: ValidationError, loaded: LoadedYaml, rule_id: str | None, prefix: tuple[Any, ...] = ()) -> list[Issue]:
    issues = []
    for error in exc.errors():
        loc = prefix + tuple(error.get("loc", ()))
        where = ".".join(str(p) for p in loc) or "(file)"
        message = error.get("msg", "invalid")
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        issues.append(Issue(str(loaded.path), loaded.line_of(loc), rule_id, f"{where}: {message}"))
    return issues


def load_ruleset(directory: Path | None = None, *, strict: bool = True) -> RuleSet:
    """Load and validate a rulesets folder.

    With ``strict`` (the default, and always in the service) any error raises :class:`RulesetError`
    listing every issue; ``strict=False`` returns the RuleSet with its issues for ``cds rules validate``.
    """
    directory = (directory or default_rulesets_dir()).resolve()
    issues: list[Issue] = []
    if not directory.is_dir():
        raise RulesetError(f"rulesets folder {directory} does not exist")
    try:
        valuesets = load_valuesets(directory / "valuesets")
    except ValueSetError as exc:
        raise RulesetError("value sets do not load", [str(exc)]) from None
    labs = load_lab_catalog(directory / "labs.yaml", valuesets)
    catalog = fact_catalog(valuesets, labs)

    definitions = DefinitionsFile()
    definitions_path = directory / "definitions.yaml"
    base = ConditionParser(catalog=catalog, valuesets=valuesets, thresholds={})
    if definitions_path.exists():
        try:
            loaded_defs = load_yaml(definitions_path)
            definitions = DefinitionsFile.model_validate(loaded_defs.data or {})
            base = ConditionParser(
                catalog=catalog, valuesets=valuesets,
                thresholds=dict(definitions.thresholds), definitions=dict(definitions.definitions),
            )
            for name in definitions.definitions:
                base._definition(name, ("definitions", name))
            for problem in base.issues:
                issues.append(Issue(str(definitions_path), loaded_defs.line_of(problem.location), None, problem.message))
        except YamlSyntaxError as exc:
            issues.append(Issue(str(exc.path), exc.line, None, exc.message))
        except ValidationError as exc:
            issues += _pydantic_issues(exc, loaded_defs, None)

    rules: list[LoadedRule] = []
    seen_ids: dict[str, str] = {}
    rules_dir = directory / "rules"
    for path in sorted(rules_dir.glob("*.yaml")) if rules_dir.is_dir() else []:
        if path.name.endswith(".test.yaml"):
            continue
        try:
            loaded = load_yaml(path)
        except YamlSyntaxError as exc:
            issues.append(Issue(str(exc.path), exc.line, None, exc.message))
            continue
        data = loaded.data
        rule_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(data, dict):
            issues.append(Issue(str(path), 1, None, "a rule file must be a YAML mapping"))
            continue
        try:
            spec = RuleSpec.model_validate(data)
        except ValidationError as exc:
            issues += _pydantic_issues(exc, loaded, rule_id)
            continue
        if spec.id != path.stem:
            issues.append(Issue(str(path), loaded.line_of(("id",)), spec.id, f"id must equal the file name stem {path.stem!r}"))
        if spec.id in seen_ids:
            issues.append(Issue(str(path), loaded.line_of(("id",)), spec.id, f"duplicate rule id (also in {seen_ids[spec.id]})"))
        seen_ids[spec.id] = str(path)
        parser = base.with_thresholds(dict(spec.thresholds))
        when = parser.parse(spec.when, ("when",))
        card_conditions = [parser.parse(card.when, ("cards", i, "when")) for i, card in enumerate(spec.cards)]
        suggestion_conditions = [
            [parser.parse(s.when, ("cards", i, "suggestions", j, "when")) for j, s in enumerate(card.suggestions)]
            for i, card in enumerate(spec.cards)
        ]
        for problem in parser.issues:
            issues.append(Issue(str(path), loaded.line_of(problem.location), spec.id, problem.message))
        for name in spec.thresholds:
            if name not in parser.used_thresholds:
                issues.append(Issue(str(path), loaded.line_of(("thresholds", name)), spec.id,
                                    f"threshold {name!r} is never used", severity="warning"))
        rules.append(LoadedRule(spec=spec, source=loaded, when=when, card_conditions=card_conditions,
                                suggestion_conditions=suggestion_conditions,
                                used_thresholds=set(parser.used_thresholds) | base.used_thresholds,
                                used_valuesets=set(parser.used_valuesets) | base.used_valuesets,
                                used_definitions=set(parser.used_definitions)))
    if not rules:
        issues.append(Issue(str(rules_dir), 1, None, "no rule files found"))

    ruleset = RuleSet(directory=directory, valuesets=valuesets, labs=labs, catalog=catalog,
                      definitions=definitions, rules=rules, digest=_digest(directory), issues=issues,
                      definition_nodes=dict(base._resolved))
    from cds.rules.validators import run_validators  # late import: validators render templates

    ruleset.issues += run_validators(ruleset)
    if strict and ruleset.errors:
        raise RulesetError(f"rulesets in {directory} do not validate ({len(ruleset.errors)} errors)",
                           [str(i) for i in ruleset.errors])
    return ruleset
