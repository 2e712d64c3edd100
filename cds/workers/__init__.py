"""The rule engine in supervised worker processes (issue 9).

Why processes: durable_rules is an unmaintained C extension that never releases the GIL and has known
crash reports; inside the HTTP service it used one core and a segfault took the whole service down.
Here it runs only in worker processes that the service supervises:

* :mod:`cds.workers.pool` - :class:`WorkerPool`: N single-threaded worker processes (spawn context,
  never fork of a threaded uvicorn), one pipe each, so a death is seen (EOF / process sentinel) and
  fails only the call that worker was serving; the worker is replaced, the payload hash is counted and
  quarantined after repeated crashes, every crash/timeout/restart is logged and counted
  (:class:`PoolMetrics`, read by the service's status and later its metrics).
* :mod:`cds.workers.worker` - the worker's main loop: it receives the pickled RuleSet once, compiles
  it itself (a durable_rules Host holds closures and cannot be pickled), checks the digest, then
  evaluates requests one at a time.
* :mod:`cds.workers.inprocess` - :class:`InProcessEvaluator`, the same ``evaluate`` interface on one
  in-process thread (tests with stand-in engines; the CLI simply calls :class:`cds.engine.Engine`).
* :mod:`cds.workers.faults` - TEST-ONLY fault injection, off unless a ``CDS_FAULT_INJECT_*`` variable
  is set.

Where the process boundary is cut, and why (measured on the 40 Synthea bundles, ~1 MB each): ingesting
and building facts takes ~15 ms per call, durable_rules matching ~3.4 ms and rendering ~1.4 ms. Sending
only the flat fact values would leave the dominant cost (facts) in the service process and its GIL,
so throughput could not scale with cores. The worker therefore receives the request (token and
hookInstance removed, pickled: ~3 ms to pickle, cheaper than JSON) and returns an
:class:`cds.engine.EvaluationSummary` (the response JSON, rule versions, notes): small traffic back,
the CPU-heavy work spread over the workers. The service keeps parsing, validating, fetching FHIR data
and auditing.
"""

from cds.workers.errors import PoolBusy, PoolClosed, QueueDeadlineExpired, WorkerCrashed, WorkerFailure, WorkerTimeout
from cds.workers.inprocess import InProcessEvaluator
from cds.workers.pool import PoolMetrics, Quarantine, WorkerPool, default_worker_count

__all__ = [
    "InProcessEvaluator",
    "PoolBusy",
    "PoolClosed",
    "PoolMetrics",
    "Quarantine",
    "QueueDeadlineExpired",
    "WorkerCrashed",
    "WorkerFailure",
    "WorkerPool",
    "WorkerTimeout",
    "default_worker_count",
]
