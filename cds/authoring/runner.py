"""Run the rule tests (``rules/*.test.yaml``) through the real Engine and report expected vs actual.

Each case becomes a genuine CDS Hooks request (:func:`cds.authoring.testfile.build_request`) evaluated
by :class:`cds.engine.Engine`, exactly as the service would, with draft rules enabled so drafts can be
proven before they go live. ``cds rules test``, the pytest plugin (``rulesets/conftest.py``) and the
safe reload all call :func:`run_tests`, so they can never disagree about what passes.

**Two processes on two cores.** ~520 cases take ~4.5 s on one core, the largest part of a cold
``cds serve``. With ``jobs=2`` (the default when a core is free, see :func:`default_jobs`;
``CDS_TEST_JOBS`` overrides) :func:`start_tests` forks a child that runs every other case on its own compiled engine
while the caller goes on (the gate validates the ruleset meanwhile) and then runs the rest;
:meth:`PendingTests.finish` merges the results in the order of the files. Every case still runs, on
the real engine: a child that fails in any way (killed, an exception, a garbled reply) only means the
parent runs the child's cases itself. The fork happens only where it is safe: a POSIX ``fork``, one
thread in the process, and enough cases to pay for it.
"""

from __future__ import annotations

import difflib
import os
import pickle
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from cds._exceptions import CDSError
from cds.authoring.explain import explain_evaluation
from cds.authoring.testfile import (
    TEST_SUFFIX,
    TestCase,
    TestFile,
    TestFileError,
    discover_test_files,
    load_test_file,
)
from cds.engine import Engine, Evaluation
from cds.rules.model import RuleSet

__all__ = ["CaseResult", "PendingTests", "TestReport", "action_kinds", "default_jobs", "discover_test_files",
           "run_case", "run_tests", "start_tests"]

Status = Literal["pass", "fail", "todo", "error"]


@dataclass
class CaseResult:
    case: TestCase
    status: Status
    expected: dict[str, Any] = field(default_factory=dict)
    actual: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def title(self) -> str:
        return f"{self.case.rule} :: {self.case.name}"


@dataclass
class TestReport:
    """All results, plus file-level problems (unreadable test files, orphans)."""

    __test__ = False  # not a pytest test class

    results: list[CaseResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: int = 0

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return not self.problems and self.count("fail") == 0 and self.count("error") == 0

    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if r.status in ("fail", "error")]

    def render(self, *, verbose: bool = False) -> str:
        lines: list[str] = []
        for result in self.results:
            if result.status == "pass" and not verbose:
                continue
            lines.append(f"{result.status.upper():5} {result.title}  ({result.case.where})")
            if result.message and result.status != "pass":
                lines += ["      " + line for line in result.message.splitlines()]
        lines += [f"ERROR {problem}" for problem in self.problems]
        lines.append(
            f"{len(self.results)} cases in {self.files} files: {self.count('pass')} passed, "
            f"{self.count('fail')} failed, {self.count('error')} errors, {self.count('todo')} todo"
            + (f", {len(self.problems)} file problems" if self.problems else "")
        )
        return "\n".join(lines)


def action_kinds(card: Any) -> list[str]:
    """``create ServiceRequest``, ``delete MedicationRequest``, ``update MedicationRequest``: sorted, distinct."""
    kinds = set()
    for suggestion in card.suggestions or []:
        for action in suggestion.actions or []:
            if action.resource is not None:
                kinds.add(f"{action.type} {action.resource.get('resourceType')}")
            else:
                kinds.add(f"{action.type} {(action.resourceId or '').split('/')[0]}".strip())
    return sorted(kinds)


def _kinds_match(expected: list[str], actual: list[str]) -> bool:
    """Each expected kind matches an actual one (``delete`` matches ``delete MedicationRequest``) and vice versa."""
    def fits(want: str, got: str) -> bool:
        return want == got or (" " not in want and got.split(" ")[0] == want)

    return all(any(fits(w, g) for g in actual) for w in expected) and all(any(fits(w, g) for w in expected) for g in actual)


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else ([value] if isinstance(value, str) else list(value))


def _compare(case: TestCase, evaluation: Evaluation) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    spec = case.spec
    card = next((c for c in evaluation.cards if c.source.topic is not None and c.source.topic.code == case.rule), None)
    expected: dict[str, Any] = {"fires": spec.expect == "fires"}
    actual: dict[str, Any] = {"fires": card is not None}
    wrong: list[str] = []
    if card is not None:
        actual.update({"indicator": card.indicator, "suggestions": action_kinds(card), "summary": card.summary})
    if spec.expect == "fires":
        if spec.indicator is not None:
            expected["indicator"] = spec.indicator
        if spec.suggestions is not None:
            expected["suggestions"] = sorted(spec.suggestions)
        for text in _as_list(spec.summary_contains):
            expected.setdefault("summary contains", []).append(text)
        for text in _as_list(spec.detail_contains):
            expected.setdefault("detail contains", []).append(text)
    if expected["fires"] != actual["fires"]:
        wrong.append("fires")
    elif card is not None:
        if "indicator" in expected and expected["indicator"] != card.indicator:
            wrong.append("indicator")
        if "suggestions" in expected and not _kinds_match(expected["suggestions"], actual["suggestions"]):
            wrong.append("suggestions")
        missing = [t for t in expected.get("summary contains", []) if t not in card.summary]
        if missing:
            wrong.append("summary contains")
        actual["summary contains"] = [t for t in expected.get("summary contains", []) if t in card.summary]
        detail = card.detail or ""
        if [t for t in expected.get("detail contains", []) if t not in detail]:
            wrong.append("detail contains")
        actual["detail contains"] = [t for t in expected.get("detail contains", []) if t in detail]
    return expected, actual, wrong


def _lines(data: dict[str, Any], keys: list[str]) -> list[str]:
    return [f"{key}: {data[key]}" for key in keys if key in data]


def _failure_text(case: TestCase, engine: Engine, evaluation: Evaluation, expected: dict[str, Any],
                  actual: dict[str, Any]) -> str:
    keys = list(expected)
    diff = difflib.unified_diff(_lines(expected, keys), _lines(actual, keys), "expected", "actual", lineterm="", n=9)
    text = list(diff)
    if actual.get("summary") and "summary" not in keys:
        text.append(f"card summary: {actual['summary']}")
    try:
        explanation = explain_evaluation(engine, evaluation, rule=case.rule)
        rule = explanation.rules[0]
        for card in rule.cards:
            state = "holds" if card.holds else f"fails: {card.reason}"
            text.append(f"card {card.index} ({card.indicator}) {state}")
    except KeyError:
        text.append(f"rule {case.rule} is not in the ruleset")
    others = sorted(c.source.topic.code for c in evaluation.cards if c.source.topic and c.source.topic.code != case.rule)
    if others:
        text.append(f"other cards: {', '.join(others)}")
    return "\n".join(text)


def run_case(engine: Engine, case: TestCase) -> CaseResult:
    """Evaluate one case with ``engine`` and compare with its expectations."""
    try:
        evaluation = engine.evaluate(case.request, now=case.now)
    except CDSError as exc:
        return CaseResult(case, "error", message=f"the engine refused the test patient: {exc}")
    expected, actual, wrong = _compare(case, evaluation)
    if not wrong:
        if case.spec.todo:
            return CaseResult(case, "fail", expected, actual,
                              f"marked todo ({case.spec.todo}) but passes now: remove 'todo'")
        return CaseResult(case, "pass", expected, actual)
    message = _failure_text(case, engine, evaluation, expected, actual)
    if case.spec.todo:
        return CaseResult(case, "todo", expected, actual, f"known gap: {case.spec.todo}\n{message}")
    return CaseResult(case, "fail", expected, actual, message)


class _Engines:
    """The Engine each case needs: drafts included (default) or as the service runs them."""

    def __init__(self, ruleset: RuleSet, engine: Engine | None) -> None:
        self.ruleset = ruleset
        self._engines: dict[bool, Engine] = {}
        if engine is not None:
            self._engines[engine.include_drafts] = engine

    def get(self, include_drafts: bool) -> Engine:
        if include_drafts not in self._engines:
            self._engines[include_drafts] = Engine(self.ruleset, include_drafts=include_drafts)
        return self._engines[include_drafts]


def load_cases(ruleset: RuleSet, *, rule: str | None = None) -> tuple[list[TestFile], list[str]]:
    paths, problems = discover_test_files(ruleset)
    files: list[TestFile] = []
    for path in paths:
        if rule is not None and path.name != f"{rule}{TEST_SUFFIX}":
            continue
        try:
            files.append(load_test_file(path))
        except TestFileError as exc:
            problems += [f"{exc.path}:{line}: {message}" for line, message in exc.problems]
    return files, problems


def run_tests(ruleset: RuleSet, *, engine: Engine | None = None, rule: str | None = None,
              jobs: int = 1) -> TestReport:
    """Run every test file of ``ruleset`` (or one rule's) and return the report (``jobs=2``: two processes)."""
    return start_tests(ruleset, engine=engine, rule=rule, jobs=jobs).finish()


# Below this many cases a fork (~10 ms, plus the child's own engine compile) does not pay for itself.
_MIN_CASES_TO_SPLIT = 64


def default_jobs() -> int:
    """``CDS_TEST_JOBS`` if set (1 = one process, 2 = two), else 2 only when a core is free, else 1.

    "A core is free": at least two cores and a 1-minute load average of at most cores - 1. Measured on
    a shared 2-core machine at load 6, a cold ``cds serve`` with the split took 13-17 s against 11-13 s
    without: when every core is busy the second process only adds its duplicated start-up work.
    """
    raw = os.environ.get("CDS_TEST_JOBS", "").strip()
    if raw.isdigit() and int(raw) >= 1:
        return min(int(raw), 2)
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform: assume busy
        load = float(cores)
    return 2 if cores >= 2 and load <= cores - 1 else 1


def _can_fork() -> bool:
    return hasattr(os, "fork") and threading.active_count() == 1


class PendingTests:
    """Rule tests under way: the child's share (if any) runs already; :meth:`finish` runs the rest."""

    def __init__(self, ruleset: RuleSet, cases: list[TestCase], report: TestReport, engine: Engine | None,
                 jobs: int) -> None:
        self.ruleset, self.cases, self.report = ruleset, cases, report
        self._engine = engine
        self._child: tuple[int, int] | None = None  # (pid, read end of the pipe)
        self._child_share: list[int] = []
        if jobs >= 2 and len(cases) >= _MIN_CASES_TO_SPLIT and _can_fork():
            self._child_share = list(range(1, len(cases), 2))
            self._fork()

    def _fork(self) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run its share on its own engine, send the results, never return
            code = 1
            try:
                os.close(read_end)
                engines = _Engines(self.ruleset, None)
                results = []
                for i in self._child_share:
                    result = run_case(engines.get(self.cases[i].spec.include_drafts), self.cases[i])
                    results.append((i, result.status, result.expected, result.actual, result.message))
                with os.fdopen(write_end, "wb") as pipe:
                    pipe.write(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        self._child = (pid, read_end)

    def _collect(self) -> dict[int, CaseResult] | None:
        """The child's results by case index, or None when it did not deliver all of them."""
        if self._child is None:
            return None
        pid, read_end = self._child
        self._child = None
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _pid, status = os.waitpid(pid, 0)
        if status != 0:
            return None
        try:
            rows = pickle.loads(data)
            results = {i: CaseResult(self.cases[i], st, expected, actual, message)
                       for i, st, expected, actual, message in rows}
        except Exception:  # noqa: BLE001 - a garbled reply: the parent runs those cases itself
            return None
        return results if set(results) == set(self._child_share) else None

    def cancel(self) -> None:
        """Stop the child (the ruleset was refused before its tests mattered)."""
        if self._child is not None:
            pid, read_end = self._child
            self._child = None
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            os.close(read_end)
            os.waitpid(pid, 0)

    def finish(self, engine: Engine | None = None) -> TestReport:
        """Run the parent's share (on ``engine`` if given), merge the child's results, return the report."""
        engines = _Engines(self.ruleset, engine if engine is not None else self._engine)
        child_share = set(self._child_share)
        results: dict[int, CaseResult] = {}
        for i, case in enumerate(self.cases):
            if i not in child_share:
                results[i] = run_case(engines.get(case.spec.include_drafts), case)
        from_child = self._collect() if child_share else {}
        if from_child is None:  # the child failed: every case still runs, here
            from_child = {i: run_case(engines.get(self.cases[i].spec.include_drafts), self.cases[i])
                          for i in self._child_share}
        results.update(from_child)
        self.report.results += [results[i] for i in range(len(self.cases))]
        return self.report


def start_tests(ruleset: RuleSet, *, engine: Engine | None = None, rule: str | None = None,
                jobs: int = 1) -> PendingTests:
    """Load the cases of ``ruleset`` (or one rule's) and, with ``jobs=2``, start the child's share now."""
    files, problems = load_cases(ruleset, rule=rule)
    report = TestReport(problems=problems, files=len(files))
    statuses = {r.spec.id: r.spec.status for r in ruleset.rules}
    # a retired rule never runs; its tests document history only
    cases = [case for test_file in files if statuses.get(test_file.rule) != "retired" for case in test_file.cases]
    return PendingTests(ruleset, cases, report, engine, jobs)
