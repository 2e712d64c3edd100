"""Suite-wide: the tests never read or fill the user's cache folder (``cds.cache``).

Every test session gets its own empty ``CDS_CACHE_DIR`` (child processes inherit it), so a cached
ruleset or gate verdict from a developer's earlier runs can never make a test pass, and the suite
leaves nothing behind in ``~/.cache``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("CDS_CACHE_DIR")
    os.environ["CDS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cds-cache"))
    yield
    if previous is None:
        os.environ.pop("CDS_CACHE_DIR", None)
    else:
        os.environ["CDS_CACHE_DIR"] = previous


def _missing_in_ci(what: str) -> None:
    """Skip on a laptop that lacks ``what``; in CI (``CI`` set) the same lack is a failure, never a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (.ci/run installs it) but is missing")
    pytest.skip(f"{what} is not installed here (CI installs it and runs this test)")


def chromium_executable() -> str | None:
    """Debian's chromium (``apt-get install -y chromium``) or ``CDS_CHROMIUM``; Playwright downloads nothing."""
    import shutil

    return os.environ.get("CDS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[object]:
    """A headless Chromium driven by Playwright, shared by the session's browser tests (mark them ``browser``)."""
    executable = chromium_executable()
    if executable is None:
        _missing_in_ci("Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing_in_ci("the playwright package (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def browser_page(chromium_browser: object) -> Iterator[object]:
    """A fresh page (own context: no cookies or cache shared between tests)."""
    context = chromium_browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def spark_available() -> None:
    """PySpark and Java present (mark Spark tests ``spark``); skipped on a laptop without them, a failure in CI."""
    import shutil

    try:
        import pyspark  # noqa: F401
    except ImportError:
        _missing_in_ci("PySpark (pip install -e '.[spark]')")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        _missing_in_ci("Java 17 (for Spark)")
