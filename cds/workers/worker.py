"""The main loop of one engine worker process (started by :class:`cds.workers.pool.WorkerPool`).

Protocol on the worker's own pipe (``multiprocessing.connection.Connection``):

1. The pool sends ``(ruleset_blob, digest, include_drafts, handler)``. The worker unpickles the RuleSet,
   checks that its digest is the one the service serves, and compiles it into its own durable_rules
   Host (compilation cannot be shipped: a Host holds closures). It answers ``("ready", pid)`` or
   ``("failed", reason)``. The RuleSet comes from the service rather than from the folder so that a
   restarted worker always compiles exactly what the service validated, whatever an editor has done
   to the files since, and starts in about a second (no YAML parsing, no validation).
2. Then, forever: receive ``pickle((hook, payload, now))`` bytes, evaluate, send one reply:
   ``("ok", EvaluationSummary)``, ``("input", class_name, message, field, resource)`` for the caller's
   errors (HTTP 400), or ``("engine", message)`` for engine failures. End of file on the pipe (the
   service closed it or died) ends the worker.

Single-threaded as durable_rules requires. SIGINT is ignored so that Ctrl-C in the service's terminal
(delivered to the whole process group) never kills a worker in the middle of a call; the service
stops its workers itself by closing their pipes.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["worker_main"]


def _default_handler(engine: Any, payload: Any, hook: str | None, now: str | None) -> Any:
    return engine.evaluate(payload, hook=hook, now=now).summary()


def _compile(conn: Connection) -> tuple[Any, Any]:
    from cds.engine import Engine

    blob, digest, include_drafts, handler_name = conn.recv()
    ruleset = pickle.loads(blob)
    if ruleset.digest != digest:
        raise RuntimeError(f"ruleset digest {ruleset.digest} is not the one served ({digest})")
    handler = _default_handler
    if handler_name:
        module_name, _, attribute = handler_name.partition(":")
        handler = getattr(importlib.import_module(module_name), attribute)
    return Engine(ruleset, include_drafts=include_drafts), handler


def worker_main(conn: Connection, index: int) -> None:
    """Entry point of a worker process (``index`` names it in logs)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine, handler = _compile(conn)
    except BaseException as exc:  # noqa: BLE001 - every start failure is reported to the pool
        try:
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass  # the pool is gone or gave up waiting: nobody to tell
        return
    from cds._exceptions import InputError
    from cds.workers.faults import Faults

    faults = Faults.from_env()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        reply: tuple[Any, ...]
        try:
            hook, payload, now = pickle.loads(message)
            faults.apply(payload)
            reply = ("ok", handler(engine, payload, hook, now))
        except InputError as exc:
            reply = ("input", type(exc).__name__, exc.message, exc.field, getattr(exc, "resource", None))
        except Exception as exc:  # noqa: BLE001 - the service logs it; the caller gets a bare 500
            reply = ("engine", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
