"""Load a rulesets folder: value sets, lab definitions, shared definitions and rule files.

Layout (paths relative to the folder)::

    valuesets/*.yaml        value sets (kind condition/medication/observation/procedure/device)
    labs.yaml               lab and body-measure facts: codes, canonical unit, look-back
    definitions.yaml        shared thresholds and named conditions ("sir_context", "diabetes"...)
    rules/*.yaml            one rule per file; tests beside it as <stem>.test.yaml

Loading collects *every* problem with file and line before failing, so one run of
``cds rules validate`` shows everything an informatician must fix. Loading does not validate beyond
the schema (see :func:`load_ruleset`); the model types live in :mod:`cds.rules.model`.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cds._exceptions import RulesetError
from cds.cache import cache_dir, cache_enabled, code_version, read_private, write_atomic
from cds.facts.build import fact_catalog
from cds.facts.labs import load_lab_catalog
from cds.resources import builtin_rulesets_dir
from cds.rules.conditions import ConditionParser
from cds.rules.model import Issue, LoadedRule, RuleSet
from cds.rules.schema import DefinitionsFile, RuleSpec
from cds.rules.yamlsource import LoadedYaml, YamlSyntaxError, load_yaml
from cds.valuesets import ValueSetError, load_valuesets

__all__ = ["Issue", "LoadedRule", "RuleSet", "default_rulesets_dir", "load_ruleset"]

log = logging.getLogger(__name__)


def default_rulesets_dir() -> Path:
    """The built-in rulesets, shipped as package data (:func:`cds.resources.builtin_rulesets_dir`)."""
    return builtin_rulesets_dir()


def _digest(directory: Path) -> str:
    """Content hash (full SHA-256, hex) of every file that shapes behaviour, rule tests included.

    The first 16 digits are the ruleset's identity for reloads and the audit trail; the whole hash
    keys the validation cache (:mod:`cds.authoring.gate`).
    """
    sha = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".json", ".csv"):
            sha.update(str(path.relative_to(directory)).encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


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


def load_ruleset(directory: Path | None = None, *, strict: bool = True, use_cache: bool = False) -> RuleSet:
    """Load a rulesets folder: parse every file, check it against the schema, resolve the conditions.

    That is all the engine needs, and all ``cds evaluate`` pays for. The deeper checks (templates,
    suggested FHIR resources, durable_rules limits, rule tests) run only where they are asked for:
    ``cds rules validate|test|catalog``, the service start-up and reloads, through
    :func:`cds.authoring.gate.validate_ruleset` / :func:`cds.authoring.gate.gate_ruleset`.

    With ``strict`` (the default) any error raises :class:`RulesetError` listing every issue;
    ``strict=False`` returns the RuleSet with its issues for ``cds rules validate``.

    ``use_cache`` keeps the loaded RuleSet in the user cache folder (:mod:`cds.cache`), keyed by the
    full digest of the folder's files, the folder's path and the code version: a later load of the same
    files by the same code unpickles it (about 0.1 s instead of 0.3 s). Commands that start, evaluate
    once and exit (``cds evaluate``, ``cds explain``) use it; a changed file is a new key.
    """
    directory = (directory or default_rulesets_dir()).resolve()
    if not directory.is_dir():
        raise RulesetError(f"rulesets folder {directory} does not exist")
    cache_path = _cache_path(directory) if use_cache and cache_enabled() else None
    ruleset = _from_cache(cache_path) if cache_path is not None else None
    if ruleset is None:
        ruleset = _load(directory)
        if cache_path is not None and cache_path.stem == _cache_key(directory, ruleset.full_digest):
            # (the digest was taken before and after parsing: a file edited meanwhile is not cached)
            write_atomic(cache_path, pickle.dumps(ruleset, protocol=pickle.HIGHEST_PROTOCOL), keep=8)
    if strict and ruleset.errors:
        raise RulesetError(f"rulesets in {directory} do not validate ({len(ruleset.errors)} errors)",
                           [str(i) for i in ruleset.errors])
    return ruleset


def _cache_key(directory: Path, full_digest: str) -> str:
    return hashlib.sha256(f"{full_digest}\0{directory}\0{code_version()}".encode()).hexdigest()


def _cache_path(directory: Path) -> Path:
    return cache_dir() / "rulesets" / f"{_cache_key(directory, _digest(directory))}.pickle"


def _from_cache(path: Path) -> RuleSet | None:
    raw = read_private(path)
    if raw is None:
        return None
    try:
        ruleset = pickle.loads(raw)  # noqa: S301 - our own file, owner-only (cds.cache.read_private)
    except Exception as exc:  # noqa: BLE001 - a damaged entry is recomputed, never fatal
        log.warning("ignoring the damaged ruleset cache %s: %s", path, exc)
        return None
    return ruleset if isinstance(ruleset, RuleSet) and not ruleset.validated else None


def _load(directory: Path) -> RuleSet:
    issues: list[Issue] = []
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

    full_digest = _digest(directory)
    return RuleSet(directory=directory, valuesets=valuesets, labs=labs, catalog=catalog,
                   definitions=definitions, rules=rules, digest=full_digest[:16], issues=issues,
                   definition_nodes=dict(base._resolved), full_digest=full_digest)
