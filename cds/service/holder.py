"""The rules being served, their engine workers, and safe reload: the service's one EngineHolder.

Requests call :meth:`EngineHolder.current` and use that snapshot (:class:`LoadedEngine`: the rules,
their discovery catalogue and the evaluator running them) to the end, so a reload can swap in new
rules while in-flight requests finish on the old.

Safe reload (issue 5), now without risk to the service process (issue 9):

1. **Throwaway process.** Loading, validating, compiling the candidate folder and running every
   rule's own tests happen in a child process (:func:`prepare_candidate`, spawn context) which returns
   the :class:`cds.authoring.reload.ReloadResult` and, on success, the pickled RuleSet. A candidate
   that crashes durable_rules kills only that child: the reload is refused with the reason.
2. **New workers, warm, before the swap.** On success a new :class:`cds.workers.WorkerPool` compiles
   exactly that RuleSet; only when all its workers are ready is it swapped in. The old pool is then
   retired gracefully once no request holds the old snapshot (its queued and running calls finish on
   the old rules) and its workers stop. Capacity never drops during a reload (old and new workers
   overlap briefly) - a stronger guarantee than replacing workers one at a time.
3. **On failure nothing changes**: the old pool keeps serving, the result says why (HTTP 409).

The watcher (:class:`RulesetWatcher`) calls the same :meth:`EngineHolder.reload` when files change.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import signal
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from cds.authoring.reload import ReloadResult
from cds.service.catalog import ServiceDefinition, build_catalog
from cds.service.metrics import observe_queue_wait

__all__ = ["CandidateCheck", "EngineHolder", "LoadedEngine", "RulesetWatcher", "ServedRules", "load_rules", "pool_factory",
           "prepare_candidate", "start_rules_check"]

log = logging.getLogger("cds.service.reload")


@dataclass(frozen=True)
class ServedRules:
    """What the service process knows of the rules it serves: no durable_rules, just the data.

    Enough for discovery (:func:`cds.service.catalog.build_catalog` reads ``ruleset`` and ``rules``),
    the admin status and the audit digest; evaluation happens in the workers.
    """

    ruleset: Any  # cds.rules.loader.RuleSet
    include_drafts: bool = False

    @property
    def digest(self) -> str:
        return self.ruleset.digest

    @property
    def rules(self) -> list[Any]:
        # the same selection as cds.engine.active_rules, without importing the engine (durable_rules,
        # the fact builders) into the service process just to build the discovery catalogue
        return [r for r in self.ruleset.rules
                if r.spec.status == "active" or (self.include_drafts and r.spec.status == "draft")]


@dataclass(frozen=True)
class LoadedEngine:
    """One set of rules, its discovery catalogue, and the evaluator (worker pool) running it."""

    rules: Any  # ServedRules, or any object with ruleset / rules / digest / include_drafts
    evaluator: Any  # cds.workers.WorkerPool (or InProcessEvaluator for stand-ins in tests)
    catalog: dict[str, ServiceDefinition]

    @property
    def digest(self) -> str:
        return self.rules.digest

    @property
    def engine(self) -> Any:
        """Kept for callers of the previous shape: the rules (digest, rules, include_drafts)."""
        return self.rules

    def evaluate(self, payload: dict[str, Any], hook: str | None = None, now: str | None = None) -> Any:
        """Evaluate one request on these rules' workers and wait: an :class:`cds.engine.EvaluationSummary`.

        For tools and tests holding a snapshot; the service awaits ``evaluator.evaluate`` instead.
        """
        return self.evaluator.evaluate_sync(payload, hook, now)


def pool_factory(*, size: int | None = None, timeout_s: float = 10.0, max_pending: int = 64,
                 include_drafts: bool = False, start_timeout_s: float = 120.0, quarantine_after: int = 2,
                 quarantine_s: float = 600.0) -> Callable[[Any, bytes], Any]:
    """``(ruleset, blob) -> WorkerPool`` (not started) sharing one quarantine and one set of counters,
    so that crash counts and quarantined payloads survive reloads."""
    from cds.workers import PoolMetrics, Quarantine, WorkerPool
    from cds.workers.pool import WorkerSpec

    metrics = PoolMetrics(on_wait=observe_queue_wait)
    quarantine = Quarantine(after=quarantine_after, seconds=quarantine_s)

    def make(ruleset: Any, blob: bytes) -> Any:
        return WorkerPool(WorkerSpec(blob, ruleset.digest, include_drafts), size=size, timeout_s=timeout_s,
                          max_pending=max_pending, quarantine=quarantine, metrics=metrics,
                          start_timeout_s=start_timeout_s)

    return make


def _candidate_child(conn: Connection, directory: str, include_drafts: bool, run_rule_tests: bool,
                     previous_digest: str | None) -> None:
    """In the throwaway process: prepare the candidate, send (ReloadResult, pickled RuleSet or None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from cds.authoring.reload import prepare_engine

    from cds.workers.faults import crash_check_if_asked

    engine, result = prepare_engine(Path(directory), include_drafts=include_drafts, run_rule_tests=run_rule_tests,
                                    previous_digest=previous_digest)
    crash_check_if_asked()  # test-only fault hook, off unless its variable is set
    blob = pickle.dumps(engine.ruleset, protocol=pickle.HIGHEST_PROTOCOL) if engine is not None else None
    conn.send((result, blob))
    conn.close()


class CandidateCheck:
    """A throwaway process checking one rulesets folder, started at once; :meth:`result` waits for it.

    Started before the caller does other slow work (``cds serve`` imports the web stack meanwhile), so
    the check and that work overlap on two cores.
    """

    def __init__(self, directory: Path, *, include_drafts: bool = False, run_rule_tests: bool = True,
                 previous_digest: str | None = None, timeout_s: float = 600.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.previous_digest = previous_digest
        self.timeout_s = timeout_s
        self._parent, child = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_candidate_child, name="cds-ruleset-candidate", daemon=True,
                                    args=(child, str(directory), include_drafts, run_rule_tests, previous_digest))
        self._process.start()
        child.close()

    def result(self) -> tuple[ReloadResult, bytes | None]:
        """Wait for the verdict; a crash or a hang of the child is a refusal with the reason."""
        parent, process = self._parent, self._process
        try:
            ready = wait([parent, process.sentinel], timeout=self.timeout_s)
            reply = None
            if parent in ready:
                try:
                    reply = parent.recv()
                except (EOFError, OSError):
                    reply = None
            if reply is not None:
                return reply
            if not ready:
                reason = f"checking the rulesets took longer than {self.timeout_s:g} s"
            else:
                process.join(5)
                reason = f"the process checking the rulesets died ({_exit_text(process.exitcode)})"
            return ReloadResult(ok=False, digest=None, previous_digest=self.previous_digest, issues=[reason]), None
        finally:
            parent.close()
            if process.is_alive():
                process.kill()
            process.join(5)


def prepare_candidate(directory: Path, *, include_drafts: bool = False, run_rule_tests: bool = True,
                      previous_digest: str | None = None, timeout_s: float = 600.0) -> tuple[ReloadResult, bytes | None]:
    """Validate, compile and test ``directory`` in a throwaway process; the result and the RuleSet.

    The RuleSet comes back pickled (None when refused or unchanged). A crash or a hang of the child
    is a refusal with the reason, never a failure of the caller.
    """
    return CandidateCheck(directory, include_drafts=include_drafts, run_rule_tests=run_rule_tests,
                          previous_digest=previous_digest, timeout_s=timeout_s).result()


def start_rules_check(settings: Any) -> Callable[[], tuple[ServedRules, bytes]]:
    """Begin establishing the rules to start with; call the returned function for them.

    With a cached gate pass for exactly these files and this code the rules are known at once (see
    :func:`_gate_passed_before`); otherwise the throwaway check process is started now and the
    returned function waits for it, raising :class:`cds._exceptions.RulesetError` with every reason
    when the rules cannot be served. Either way nothing is served before the gate has passed.
    """
    import pickle

    from cds._exceptions import RulesetError
    from cds.rules.loader import default_rulesets_dir

    directory = Path(settings.rulesets or default_rulesets_dir())
    served = _gate_passed_before(directory, settings)
    if served is not None:
        return lambda: served
    check = CandidateCheck(directory, include_drafts=settings.include_drafts,
                           run_rule_tests=settings.rule_tests_on_start, timeout_s=settings.ruleset_check_timeout_s)

    def finish() -> tuple[ServedRules, bytes]:
        result, blob = check.result()
        if not result.ok or blob is None:
            raise RulesetError(f"rulesets in {directory} cannot be served", result.issues + result.test_failures)
        return ServedRules(pickle.loads(blob), include_drafts=settings.include_drafts), blob

    return finish


def load_rules(settings: Any) -> tuple[ServedRules, bytes]:
    """The rules to start with, checked; raises RulesetError with every reason.

    Validated, compiled and (``CDS_RULE_TESTS_ON_START``, default on) every rule's own tests passed, in
    a throwaway process unless the gate cache holds a pass for exactly these files and this code;
    returns the RuleSet (as served, and pickled for the workers).
    """
    return start_rules_check(settings)()


def _gate_passed_before(directory: Path, settings: Any) -> tuple[ServedRules, bytes] | None:
    """The rules, when the gate cache holds a pass for exactly these files and this code; else None.

    Why this is safe: the pass was recorded only after validation, compilation and (when asked) every
    rule test succeeded on the same full digest (every YAML/JSON/CSV file, rule tests included) with
    the same code version; a failure is never recorded. Skipping the throwaway process saves a Python
    start, the loading and a compilation (~2-4 s) on every restart of unchanged rules. The workers
    compile the rules themselves and are supervised, so a crash there cannot take the service down.
    Reloads still check every candidate in a throwaway process (:meth:`EngineHolder.reload`).
    """
    import pickle

    from cds._exceptions import RulesetError
    from cds.authoring.gate import has_cached_pass
    from cds.rules.loader import load_ruleset

    try:
        ruleset = load_ruleset(directory, strict=False, use_cache=True)
    except RulesetError:
        return None  # the throwaway check reports it with every reason
    if not has_cached_pass(ruleset, need_tests=settings.rule_tests_on_start):
        return None
    log.info("rulesets %s passed the gate before (same files, same code): served without re-checking",
             ruleset.digest)
    return ServedRules(ruleset, include_drafts=settings.include_drafts), pickle.dumps(
        ruleset, protocol=pickle.HIGHEST_PROTOCOL)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


class EngineHolder:
    """Holds the current :class:`LoadedEngine`; reads are lock-free, swaps and reloads are serialised.

    ``make_evaluator(ruleset, blob)`` builds (not starts) the evaluator of a new RuleSet; the service
    passes one that builds a :class:`cds.workers.WorkerPool` with its settings.
    """

    def __init__(self, loaded: LoadedEngine, *, directory: Path, make_evaluator: Callable[[Any, bytes], Any],
                 include_drafts: bool = False, run_rule_tests: bool = True, ready_timeout_s: float = 120.0,
                 check_timeout_s: float = 600.0) -> None:
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._current = loaded
        self.directory = Path(directory)
        self.include_drafts = include_drafts
        self.run_rule_tests = run_rule_tests
        self.make_evaluator = make_evaluator
        self.ready_timeout_s = ready_timeout_s
        self.check_timeout_s = check_timeout_s
        self.last_result: ReloadResult | None = None

    @classmethod
    def load(cls, directory: Path | None = None, *, include_drafts: bool = False, run_rule_tests: bool = True,
             workers: int | None = 1, timeout_s: float = 10.0) -> EngineHolder:
        """Check ``directory`` in a throwaway process and start its workers (tools and tests; the
        service builds its holder from its settings in :func:`cds.service.app.create_app`).

        Raises :class:`cds._exceptions.RulesetError` with every reason when the rules cannot be served.
        """
        from cds._exceptions import RulesetError
        from cds.rules.loader import default_rulesets_dir

        target = Path(directory or default_rulesets_dir())
        result, blob = prepare_candidate(target, include_drafts=include_drafts, run_rule_tests=run_rule_tests)
        if not result.ok or blob is None:
            raise RulesetError(f"rulesets in {target} cannot be served", result.issues + result.test_failures)
        make = pool_factory(size=workers, timeout_s=timeout_s, include_drafts=include_drafts)
        ruleset = pickle.loads(blob)
        evaluator = make(ruleset, blob).start()
        holder = cls(cls.loaded(ServedRules(ruleset, include_drafts), evaluator), directory=target,
                     make_evaluator=make, include_drafts=include_drafts, run_rule_tests=run_rule_tests)
        holder.last_result = result
        return holder

    @staticmethod
    def loaded(rules: Any, evaluator: Any) -> LoadedEngine:
        return LoadedEngine(rules=rules, evaluator=evaluator, catalog=build_catalog(rules))

    def current(self) -> LoadedEngine:
        return self._current

    @property
    def digest(self) -> str:
        return self._current.digest

    def swap(self, loaded: LoadedEngine) -> LoadedEngine:
        """Install ``loaded`` (its evaluator started and ready); the previous one retires when unused.

        The previous evaluator is retired (gracefully: its queued and running calls finish) as soon as
        the last reference to the previous snapshot is dropped, i.e. when the last request that took
        it has ended. Retiring at once would refuse calls that took the snapshot just before the swap.
        """
        with self._lock:
            previous, self._current = self._current, loaded
        if previous.evaluator is not loaded.evaluator:
            weakref.finalize(previous, previous.evaluator.retire)
        return previous

    def reload(self, directory: Path | None = None) -> ReloadResult:
        """Check ``directory`` (default: the one served) in a throwaway process; swap only if all is well."""
        with self._reload_lock:
            target = Path(directory or self.directory)
            result, blob = prepare_candidate(target, include_drafts=self.include_drafts,
                                             run_rule_tests=self.run_rule_tests, previous_digest=self.digest,
                                             timeout_s=self.check_timeout_s)
            if result.ok and result.changed and blob is not None:
                result = self._install(blob, result)
            if result.ok and result.changed:
                self.directory = target
                log.info("rulesets reloaded: %s -> %s", result.previous_digest, result.digest)
            elif not result.ok:
                log.warning("rulesets reload refused, still serving %s:\n%s", self.digest, result.reason)
            self.last_result = result
            return result

    def _install(self, blob: bytes, result: ReloadResult) -> ReloadResult:
        ruleset = pickle.loads(blob)
        rules = ServedRules(ruleset, include_drafts=self.include_drafts)
        evaluator = self.make_evaluator(ruleset, blob).start()
        if not evaluator.wait_ready(timeout=self.ready_timeout_s):
            evaluator.close(graceful=False)
            return replace(result, ok=False, changed=False,
                           issues=[f"the engine workers of the new rules did not start within {self.ready_timeout_s:g} s"])
        self.swap(self.loaded(rules, evaluator))
        return result

    def close(self) -> None:
        """Stop the current evaluator (service shutdown): running calls finish, then workers stop."""
        self._current.evaluator.close(graceful=True, timeout=10)


class RulesetWatcher:
    """Reload a holder when files under its folder change (watchfiles); optional, for the service."""

    def __init__(self, holder: EngineHolder, *, debounce_ms: int = 500,
                 on_result: Callable[[ReloadResult], None] | None = None) -> None:
        self.holder = holder
        self.debounce_ms = debounce_ms
        self.on_result = on_result
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RulesetWatcher:
        self._thread = threading.Thread(target=self._run, name="ruleset-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from watchfiles import watch

        for changes in watch(self.holder.directory, stop_event=self._stop, debounce=self.debounce_ms,
                             watch_filter=lambda _change, path: path.endswith((".yaml", ".yml", ".json", ".csv"))):
            log.info("rulesets changed (%d files): reloading", len(changes))
            result = self.holder.reload()
            if self.on_result is not None:
                self.on_result(result)
