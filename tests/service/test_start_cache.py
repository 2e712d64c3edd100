"""A quick restart: a cached gate pass skips the throwaway check, a schema at head skips Alembic.

Both shortcuts must never serve something unchecked: the gate's pass is trusted only for exactly the
same files and code (any edit means the full check in a throwaway process again), and the database is
left alone only when it records exactly the packaged head revision.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cds._exceptions import RulesetError
from cds.service.app import load_rules
from cds.service.config import Settings
from cds.service.db import _at_head, downgrade, make_engine, migrate

ROOT = Path(__file__).resolve().parents[2]


def test_a_cached_pass_skips_the_check_process_and_an_edit_does_not(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CDS_CACHE_DIR", str(tmp_path / "cache"))
    rulesets = tmp_path / "rulesets"
    shutil.copytree(ROOT / "rulesets", rulesets, ignore=shutil.ignore_patterns("__pycache__", "conftest.py"))
    settings = Settings(rulesets=rulesets, data_dir=tmp_path / "data")

    served, blob = load_rules(settings)  # nothing cached: the full gate in the throwaway process
    assert blob and served.rules

    # the throwaway process now crashes if it runs at all: a cached pass must not start it
    monkeypatch.setenv("CDS_FAULT_INJECT_CRASH_CHECK", "1")
    again, again_blob = load_rules(settings)
    assert again.digest == served.digest
    assert [r.spec.id for r in again.rules] == [r.spec.id for r in served.rules]
    assert again_blob

    # any edit is a new digest: the check runs again (and here crashes: the start is refused)
    definitions = rulesets / "definitions.yaml"
    definitions.write_text(definitions.read_text() + "\n# edited\n")
    quick = settings.model_copy(update={"rule_tests_on_start": False})
    with pytest.raises(RulesetError, match="died"):
        load_rules(quick)


def test_a_database_at_head_is_not_migrated_again(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    engine = make_engine(url)
    assert not _at_head(engine)  # fresh: Alembic creates the schema
    migrate(engine)
    assert _at_head(engine)
    probe = ("import sys; from cds.service.db import make_engine, migrate; "
             f"migrate(make_engine({url!r})); print('alembic' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"  # at head: Alembic was not even imported
    downgrade(engine)
    assert not _at_head(engine)  # below head: Alembic runs and brings the tables back
    migrate(engine)
    assert _at_head(engine)
    engine.dispose()
