"""TEST-ONLY worker handler: the real screen_batch, except that the patient ``crash-me`` kills the worker
process with SIGSEGV (as a durable_rules segfault would)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from cds.screen.core import screen_batch


def handler(engine: Any, payload: Any, hook: str | None, now: str | None) -> Any:
    if any(patient.patient_id == "crash-me" for patient in payload["patients"]):
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
    return screen_batch(engine, payload, hook, now)
