"""pytest collects each case of ``rules/<id>.test.yaml`` as a test item, so CI runs the rule tests.

The cases run through :func:`cds.authoring.runner.run_case`, the same code as ``cds rules test``,
with one Engine per rulesets folder (drafts included), so both always agree. A failing case prints
the same expected-vs-actual diff and first failing condition as the command line.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from cds.authoring.testfile import TEST_SUFFIX, TestFileError, load_test_file


@lru_cache(maxsize=4)
def _load(directory: str) -> tuple[Any, str | None]:
    """One Engine cache per rulesets folder, or why the folder cannot be tested (cached too)."""
    from cds._exceptions import RulesetError
    from cds.authoring.runner import _Engines
    from cds.rules.loader import load_ruleset

    try:
        return _Engines(load_ruleset(Path(directory), strict=True), None), None
    except RulesetError as exc:
        return None, f"the rulesets do not validate, so no rule test can run (cds rules validate):\n{exc}"


def _engines(directory: str) -> Any:
    engines, problem = _load(directory)
    if problem is not None:
        raise RuleCaseFailed(problem)
    return engines


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.name.endswith(TEST_SUFFIX) and file_path.parent.name == "rules":
        return RuleTestFile.from_parent(parent, path=file_path)
    return None


class RuleTestFile(pytest.File):
    def collect(self):  # type: ignore[no-untyped-def]
        try:
            tests = load_test_file(self.path)
        except TestFileError as exc:
            raise self.CollectError(str(exc)) from None
        for case in tests.cases:
            yield RuleCaseItem.from_parent(self, name=case.name, case=case)


class RuleCaseFailed(Exception):
    """A rule test case did not give the expected outcome (message: the runner's report)."""


class RuleCaseItem(pytest.Item):
    def __init__(self, *, case: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        from cds.authoring.runner import run_case

        engines = _engines(str(self.path.resolve().parent.parent))
        if any(r.spec.id == self.case.rule and r.spec.status == "retired" for r in engines.ruleset.rules):
            pytest.skip("rule is retired: it never runs")
        result = run_case(engines.get(self.case.spec.include_drafts), self.case)
        if result.status == "todo":
            pytest.xfail(result.message.splitlines()[0])
        if result.status != "pass":
            raise RuleCaseFailed(f"{result.status.upper()} {result.title}\n{result.message}")

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, RuleCaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.line - 1, f"{self.case.rule}: {self.case.name}"
