"""Safe reload: a changed ruleset goes live only after it validates and its rule tests pass.

Design, and why:

* **Build a new Engine, then swap a reference.** durable_rules cannot re-register a ruleset name, so
  nothing is reloaded in place: :class:`cds.engine.Engine` compiles each RuleSet into its own Host
  under a unique name. The candidate is built and tested off to the side; only then is one attribute
  assigned (atomic under the GIL). A request that already took the current rules keeps them to the
  end, so in-flight requests finish on the old rules.
* **Bad change, old rules.** If loading, validation, compilation or any rule test fails, nothing is
  swapped; the :class:`ReloadResult` says why (every issue and failed case) and the old engine serves.
* **One reload at a time.** Reloads are serialised by a lock; readers never take it.
* **Same digest, no work.** The content digest of the folder identifies a ruleset (audit trail,
  reload results); an unchanged folder is reported as such and not recompiled.

This module is the check itself (:func:`prepare_engine`: load, validate, compile, run the rule tests)
and :func:`safe_reload` for any in-process ``swap(engine)`` callable. The one holder of the live
rules, the reload pipeline and the watcher live with the service (:mod:`cds.service.holder`), which
runs :func:`prepare_engine` in a throwaway process and the rules in supervised worker processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds._exceptions import CDSError, RulesetError

if TYPE_CHECKING:  # the service process imports ReloadResult only: no durable_rules, no fact builders there
    from cds.engine import Engine

__all__ = ["ReloadResult", "prepare_engine", "safe_reload"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: ``ok`` (new rules serving, or nothing changed) or why the old rules stay."""

    ok: bool
    digest: str | None
    previous_digest: str | None = None
    changed: bool = False
    issues: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    test_failures: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def reason(self) -> str:
        if self.ok:
            return "unchanged" if not self.changed else f"now serving {self.digest} (was {self.previous_digest})"
        parts = [f"kept {self.previous_digest}: the new rules were refused"]
        parts += self.issues + self.test_failures
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        """For the admin route: plain JSON."""
        return {"ok": self.ok, "digest": self.digest, "previous_digest": self.previous_digest,
                "changed": self.changed, "issues": self.issues, "warnings": self.warnings,
                "test_failures": self.test_failures, "duration_ms": round(self.duration_ms, 1)}


def prepare_engine(directory: Path, *, include_drafts: bool = False, run_rule_tests: bool = True,
                   previous_digest: str | None = None) -> tuple[Engine | None, ReloadResult]:
    """Load, validate, compile and test ``directory``; the Engine to serve, or None and the reasons."""
    from cds.engine import Engine
    from cds.rules.loader import load_ruleset

    started = time.perf_counter()

    def result(ok: bool, digest: str | None, **kwargs: Any) -> ReloadResult:
        return ReloadResult(ok=ok, digest=digest, previous_digest=previous_digest,
                            duration_ms=(time.perf_counter() - started) * 1000, **kwargs)

    try:
        ruleset = load_ruleset(directory, strict=False, use_cache=True)  # unpickled when unchanged
    except RulesetError as exc:
        return None, result(False, None, issues=[str(exc)])
    if previous_digest is not None and ruleset.digest == previous_digest:
        return None, result(True, ruleset.digest)
    from cds.authoring.gate import gate_ruleset

    gate = gate_ruleset(ruleset, run_rule_tests=run_rule_tests)  # validation + rule tests, cached by digest
    if not gate.ok:
        return None, result(False, ruleset.digest, issues=gate.issues, test_failures=gate.test_failures,
                            warnings=gate.warnings)
    warnings = gate.warnings
    try:
        tested = gate.engine if gate.engine is not None else Engine(ruleset, include_drafts=include_drafts)
    except (CDSError, ValueError) as exc:
        return None, result(False, ruleset.digest, issues=[f"the rules do not compile: {exc}"], warnings=warnings)
    # serve the tested engine unless it ran drafts the service excludes: only then compile another
    engine = tested if tested.include_drafts == include_drafts else Engine(ruleset, include_drafts=False)
    return engine, result(True, ruleset.digest, changed=True, warnings=warnings)


def safe_reload(swap: Callable[[Engine], Any], directory: Path, *, include_drafts: bool = False,
                current_digest: str | None = None, run_rule_tests: bool = True) -> ReloadResult:
    """Prepare ``directory`` and, only if it validates and its tests pass, hand the Engine to ``swap``.

    For the service: ``safe_reload(holder.swap, rulesets_dir, current_digest=holder.current().digest)``.
    """
    engine, result = prepare_engine(directory, include_drafts=include_drafts, run_rule_tests=run_rule_tests,
                                    previous_digest=current_digest)
    if engine is not None:
        swap(engine)
        log.info("rulesets reloaded: %s -> %s", current_digest, result.digest)
    elif not result.ok:
        log.warning("rulesets reload refused, still serving %s:\n%s", current_digest, result.reason)
    return result
