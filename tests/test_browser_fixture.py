"""The browser fixture itself works: Debian's chromium renders a page and runs its script."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_chromium_renders_a_page_and_runs_script(browser_page, tmp_path) -> None:
    page_file = tmp_path / "p.html"
    page_file.write_text(
        "<html><body><p id='x'>before</p>"
        "<script>document.getElementById('x').textContent='after'</script></body></html>"
    )
    browser_page.goto(page_file.as_uri())
    assert browser_page.text_content("#x") == "after"
