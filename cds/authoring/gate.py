"""The gate a ruleset passes before it is served: every check and every rule test, remembered by digest.

Loading (:func:`cds.rules.loader.load_ruleset`) parses and checks the schema only, so ``cds evaluate``
starts fast. Whoever is about to *serve* or *sign off* rules asks for the rest here:

* :func:`validate_ruleset` adds the validators' issues (templates, suggested FHIR resources, card
  text length, durable_rules limits: :mod:`cds.rules.validators`) and the rule-test checks (every rule
  has ``rules/<id>.test.yaml`` with a ``fires`` and a ``silent`` case, no orphan test files) to
  ``ruleset.issues``. ``cds rules validate``, ``cds rules test`` and ``cds rules catalog`` call it.
* :func:`gate_ruleset` is what the service start-up and a reload call: :func:`validate_ruleset`, then
  compile, then run every rule test through the real engine (drafts included: their tests must pass
  before they may ever be enabled). It refuses the ruleset (``ok`` False, with every reason) on any
  error or failed case.

A passed gate is remembered in the user cache folder (:mod:`cds.cache`: ``$CDS_CACHE_DIR``, else
``$XDG_CACHE_HOME/sir-cds``, else ``~/.cache/sir-cds``; ``CDS_CACHE=off`` disables it), one small JSON
file per ruleset, so a restart
on unchanged rules skips the slow part (rendering every template, running ~150 rule-test cases). The
entry is trusted only when it names exactly the same ruleset (the full SHA-256 of every YAML, JSON
and CSV file, rule tests included) *and* the same code (the SHA-256 of every ``cds`` source file,
the Python version and the versions of the libraries that shape results). Failures are never
cached, an unreadable or foreign entry is ignored, and a cache folder that cannot be written only
costs the speed-up: the gate itself always runs when in doubt.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds._exceptions import CDSError, RulesetError
from cds.cache import cache_dir, cache_enabled, code_version, read_private, write_atomic
from cds.authoring.testfile import TestFileError, discover_test_files, load_test_file, test_path_for
from cds.rules.model import Issue, RuleSet

if TYPE_CHECKING:
    from cds.engine import Engine

__all__ = ["GateResult", "check_rule_tests", "gate_ruleset", "has_cached_pass", "load_validated", "validate_ruleset"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def check_rule_tests(ruleset: RuleSet) -> list[Issue]:
    """Every rule has ``rules/<id>.test.yaml`` with at least one ``fires`` and one ``silent`` case.

    Missing tests, a missing kind of case, an unreadable test file and a test file without a rule
    beside it are all errors: a rule nobody has shown to fire, and to stay silent, is not served.
    """
    issues: list[Issue] = []
    for rule in ruleset.rules:
        path = test_path_for(rule.path)
        if not path.exists():
            issues.append(Issue(str(rule.path), 1, rule.spec.id, f"no tests: write {path.name} "
                                "(at least one 'fires' and one 'silent' case)"))
            continue
        try:
            tests = load_test_file(path)
        except TestFileError as exc:
            issues += [Issue(str(path), line, rule.spec.id, message) for line, message in exc.problems]
            continue
        kinds = {case.spec.expect for case in tests.cases}
        for kind in ("fires", "silent"):
            if kind not in kinds:
                issues.append(Issue(str(path), 1, rule.spec.id, f"no '{kind}' case"))
    _paths, orphans = discover_test_files(ruleset)
    for problem in orphans:
        path_text, _, message = problem.partition(":1: ")
        issues.append(Issue(path_text, 1, None, message))
    return issues


def validate_ruleset(ruleset: RuleSet) -> list[Issue]:
    """Run the validators and the rule-test checks once; their issues are added to ``ruleset.issues``.

    Returns every issue of the ruleset (loading's and these). A second call does not repeat the work.
    """
    if not ruleset.validated:
        from cds.rules.validators import run_validators

        ruleset.issues += run_validators(ruleset)
        ruleset.issues += check_rule_tests(ruleset)
        ruleset.validated = True
    return list(ruleset.issues)


def load_validated(directory: Path | None = None) -> RuleSet:
    """Load and fully validate (not test) a rulesets folder; :class:`RulesetError` listing every error."""
    from cds.rules.loader import load_ruleset

    ruleset = load_ruleset(directory, strict=True)
    validate_ruleset(ruleset)
    if ruleset.errors:
        raise RulesetError(f"rulesets in {ruleset.directory} do not validate ({len(ruleset.errors)} errors)",
                           [str(i) for i in ruleset.errors])
    return ruleset


@dataclass
class GateResult:
    """The verdict on one ruleset: served only when ``ok``."""

    ok: bool
    digest: str
    issues: list[str] = field(default_factory=list)  # errors: validation, compilation
    warnings: list[str] = field(default_factory=list)
    test_failures: list[str] = field(default_factory=list)  # failed cases and test-file problems
    rule_tests: bool = False  # the rule tests ran (or a cached pass included them)
    cached: bool = False  # the verdict came from the cache: nothing was re-checked
    engine: Engine | None = None  # the engine the tests ran on (drafts included when there are drafts)
    duration_ms: float = 0.0

    @property
    def reasons(self) -> list[str]:
        return self.issues + self.test_failures

    def raise_for_refusal(self) -> None:
        """:class:`RulesetError` listing every reason, unless the ruleset passed."""
        if not self.ok:
            raise RulesetError(f"the rulesets ({self.digest}) do not pass validation and their rule tests",
                               self.reasons)


def _entry_path(ruleset: RuleSet) -> Path:
    return cache_dir() / "gate" / f"{ruleset.full_digest}.json"


def _cached_pass(ruleset: RuleSet, *, need_tests: bool) -> dict[str, Any] | None:
    """The stored pass for exactly this ruleset and code, or None (missing, foreign, unreadable)."""
    if not ruleset.full_digest:
        return None
    path = _entry_path(ruleset)
    raw = read_private(path)
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
    except ValueError as exc:
        log.warning("ignoring the unreadable gate cache entry %s: %s", path, exc)
        return None
    if not (isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT
            and entry.get("digest") == ruleset.full_digest and entry.get("code") == code_version()
            and entry.get("ok") is True):
        return None
    if need_tests and entry.get("rule_tests") is not True:
        return None
    return entry


def has_cached_pass(ruleset: RuleSet, *, need_tests: bool = True) -> bool:
    """True when the cache holds a pass for exactly this ruleset (full digest) and this code version.

    For the service start-up: with such a pass, the throwaway process that would load, gate and compile
    the same files again is skipped (the workers compile the rules themselves, supervised). A ruleset
    with load errors, a disabled cache, or a pass without rule tests when they are wanted: False.
    """
    if ruleset.errors or not cache_enabled():
        return False
    return _cached_pass(ruleset, need_tests=need_tests) is not None


def _remember(ruleset: RuleSet, result: GateResult) -> None:
    path = _entry_path(ruleset)
    entry = {"format": CACHE_FORMAT, "digest": ruleset.full_digest, "code": code_version(), "ok": True,
             "rule_tests": result.rule_tests, "warnings": result.warnings,
             "checked_at": datetime.now(UTC).isoformat(timespec="seconds"), "directory": str(ruleset.directory)}
    write_atomic(path, json.dumps(entry).encode(), keep=64)


def gate_ruleset(ruleset: RuleSet, *, run_rule_tests: bool = True, engine: Engine | None = None,
                 use_cache: bool = True, jobs: int | None = None) -> GateResult:
    """Validate ``ruleset`` and (by default) run its rule tests; a cached pass for the same digest and code
    is accepted instead.

    ``engine`` may be an Engine already compiled from ``ruleset`` to run the tests on (one compiled with
    drafts when the ruleset has drafts, else the tests build their own). On a fresh pass the result
    carries the engine the tests ran on so the caller need not compile twice. ``jobs`` (default
    :func:`cds.authoring.runner.default_jobs`): 2 forks a child that runs half of the rule tests while
    this process validates and runs the other half (every case runs either way).
    """
    started = time.perf_counter()

    def done(result: GateResult) -> GateResult:
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result

    use_cache = use_cache and cache_enabled()
    if use_cache:
        entry = _cached_pass(ruleset, need_tests=run_rule_tests)
        if entry is not None:
            log.info("rulesets %s passed the gate before (%s): validation and rule tests skipped",
                     ruleset.digest, entry.get("checked_at"))
            return done(GateResult(ok=True, digest=ruleset.digest, warnings=list(entry.get("warnings") or []),
                                   rule_tests=bool(entry.get("rule_tests")), cached=True))
    pending = None
    if run_rule_tests and not ruleset.errors:
        from cds.authoring.runner import default_jobs, start_tests

        # with two cores, half of the rule tests run in a forked child while this process validates
        pending = start_tests(ruleset, jobs=default_jobs() if jobs is None else jobs)
    validate_ruleset(ruleset)
    warnings = [str(i) for i in ruleset.issues if i.severity != "error"]
    if ruleset.errors:
        if pending is not None:
            pending.cancel()
        return done(GateResult(ok=False, digest=ruleset.digest, issues=[str(i) for i in ruleset.errors],
                               warnings=warnings))
    result = GateResult(ok=True, digest=ruleset.digest, warnings=warnings, engine=engine)
    if run_rule_tests:
        from cds.authoring.runner import start_tests
        from cds.engine import Engine

        if pending is None:
            pending = start_tests(ruleset, jobs=1)
        has_drafts = any(rule.spec.status == "draft" for rule in ruleset.rules)
        if engine is None or (has_drafts and not engine.include_drafts):
            try:  # drafts run in the tests too
                engine = Engine(ruleset, include_drafts=has_drafts)
            except (CDSError, ValueError) as exc:
                pending.cancel()
                return done(GateResult(ok=False, digest=ruleset.digest, warnings=warnings,
                                       issues=[f"the rules do not compile: {exc}"]))
        report = pending.finish(engine)
        result.engine, result.rule_tests = engine, True
        if not report.ok:
            result.ok = False
            result.test_failures = [f"{r.title} ({r.case.where}): {_difference(r.message) if r.message else r.status}"
                                    for r in report.failures()] + report.problems
            return done(result)
    if use_cache:
        _remember(ruleset, result)
    return done(result)


def _difference(message: str) -> str:
    """The changed lines of a test failure's diff, on one line: "expected indicator: warning, got critical"."""
    lines = message.splitlines()
    expected = [line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")]
    actual = [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")]
    if expected or actual:
        return f"expected {'; '.join(expected) or '(nothing)'}, got {'; '.join(actual) or '(nothing)'}"
    return lines[0] if lines else "failed"
