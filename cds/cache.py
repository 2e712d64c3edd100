"""The user cache folder, and the identity of the code that filled it.

Two things are cached, both keyed by *what they were computed from* so a stale entry can never be
used: the gate's verdicts (:mod:`cds.authoring.gate`: "this ruleset passed validation and its rule
tests") and loaded rulesets (:func:`cds.rules.loader.load_ruleset` with ``use_cache``). Every key
includes the full SHA-256 of the ruleset's files and :func:`code_version`, the SHA-256 of every
``cds`` source file plus the Python and library versions: editing a rule, a test, a value set or a
line of code makes a new key.

Where: ``$CDS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/sir-cds``, else ``~/.cache/sir-cds``.
``CDS_CACHE=off`` disables both caches. A folder that cannot be written only costs the speed-up.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import stat
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "cache_enabled", "code_version", "read_private", "write_atomic"]

log = logging.getLogger(__name__)

# Libraries whose version can change a loaded ruleset or what a rule test sees.
_LIBRARIES = ("durable-rules", "pydantic", "pydantic-core", "fhir.resources", "Jinja2", "PyYAML")


def cache_enabled() -> bool:
    return os.environ.get("CDS_CACHE", "").strip().lower() not in ("off", "0", "false", "no")


def cache_dir() -> Path:
    """``$CDS_CACHE_DIR``, else the XDG user cache folder ``sir-cds``."""
    override = os.environ.get("CDS_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sir-cds"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """SHA-256 of the code that shapes a result: every ``cds`` source file, Python, key library versions."""
    from importlib import metadata

    import cds

    sha = hashlib.sha256()
    sha.update(sys.version.encode())
    for name in _LIBRARIES:
        try:
            sha.update(f"{name}={metadata.version(name)};".encode())
        except metadata.PackageNotFoundError:
            sha.update(f"{name}=?;".encode())
    package = Path(cds.__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        sha.update(str(path.relative_to(package)).encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def read_private(path: Path) -> bytes | None:
    """The file's bytes if it exists and only its owner (this user) can write it, else None.

    The loaded-ruleset cache holds pickles, which run code when read: a file someone else could have
    written is never read (the same rule ssh applies to its keys).
    """
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log.warning("ignoring the cache file %s: writable by another user", path)
                return None
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring the unreadable cache file %s: %s", path, exc)
        return None


def write_atomic(path: Path, data: bytes, *, keep: int | None = None) -> bool:
    """Write ``data`` to ``path`` atomically (readers see the old file or the new one), mode 0600.

    With ``keep``, only the ``keep`` most recently written files of that folder remain. False (and a
    warning) when the folder cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("could not write the cache file %s (the next start recomputes it): %s", path, exc)
        return False
    if keep is not None:
        _prune(path.parent, path.suffix, keep)
    return True


def _prune(folder: Path, suffix: str, keep: int) -> None:
    """Delete all but the ``keep`` newest ``*suffix`` files (another process may be pruning too)."""
    dated: list[tuple[float, Path]] = []
    try:
        for entry in folder.iterdir():
            if entry.suffix == suffix:
                try:
                    dated.append((entry.stat().st_mtime, entry))
                except FileNotFoundError:
                    continue
        for _mtime, old in sorted(dated, reverse=True)[keep:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not prune the cache folder %s: %s", folder, exc)
