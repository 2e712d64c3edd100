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
