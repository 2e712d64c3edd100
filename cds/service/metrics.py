"""Prometheus metrics of the service (``GET /metrics``), with ``prometheus-client``.

What an operator needs to see a CDS service misbehave: calls by service and status, their latency,
the cards returned by rule and indicator (a rule that suddenly fires on everyone, or never), the engine
queue (depth, waits) and worker restarts, and audit failures (an answer that could not be recorded).

Each app has its own :class:`ServiceMetrics` (its own registry: several apps in one test process do
not collide). The engine figures are read from the current worker pool's ``stats()`` when scraped, so
they follow a reload without bookkeeping here: its counters (``PoolMetrics``: restarts, crashes,
timeouts, ...) become ``cds_engine_<name>_total``, its numbers (pending, queued, busy, ready, ...)
``cds_engine_<name>`` gauges; a field added to ``stats()`` later appears without a change here.

Module-level hooks for code that has no app at hand (the audit writer): :func:`record_audit_failure`
and :func:`observe_call` count in every live app of the process (in production there is one).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "ServiceMetrics", "observe_call", "record_audit_failure"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)
_COUNTERS = frozenset({"started", "restarts", "crashes", "timeouts", "start_failures", "quarantined_calls", "calls",
                       "engine_errors"})
_LIVE: weakref.WeakSet[ServiceMetrics] = weakref.WeakSet()


class _EngineCollector(Collector):
    """Reads the current pool's ``stats()`` at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats()
        except Exception:  # noqa: BLE001 - a scrape never fails the service; say so in the log
            log.warning("engine stats unavailable for /metrics", exc_info=True)
            return
        for name, value in sorted(stats.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or name == "queue_depth":
                continue
            if name in _COUNTERS or name.endswith("_total"):
                base = name.removesuffix("_total")
                yield CounterMetricFamily(f"cds_engine_{base}", f"engine workers: {base} (since start)", value=value)
            else:
                yield GaugeMetricFamily(f"cds_engine_{name}", f"engine workers: {name} (now)", value=value)
        if "pending" in stats:
            yield GaugeMetricFamily("cds_engine_queue_depth", "evaluations waiting for or running on a worker",
                                    value=stats["pending"])


class ServiceMetrics:
    """The metrics of one app; ``engine_stats`` returns the current pool's ``stats()``."""

    def __init__(self, engine_stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("cds_calls", "CDS service calls by service and HTTP status", ["service", "status"],
                             registry=self.registry)
        self.latency = Histogram("cds_call_latency_seconds", "time to answer a CDS service call", ["service"],
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.cards = Counter("cds_cards", "cards returned, by service, rule and indicator",
                             ["service", "rule", "indicator"], registry=self.registry)
        self.audit_failures = Counter("cds_audit_failures", "calls whose audit record could not be written",
                                      registry=self.registry)
        self.queue_wait = Histogram("cds_engine_queue_wait_seconds", "time a call waited for an engine worker",
                                    buckets=_LATENCY_BUCKETS, registry=self.registry)
        if engine_stats is not None:
            self.registry.register(_EngineCollector(engine_stats))
        _LIVE.add(self)

    def observe_call(self, service_id: str, status: int, latency_s: float, cards: Iterable[dict[str, Any]]) -> None:
        """Count one answered call and the cards it returned (rule = the card's ``source.topic.code``)."""
        self.calls.labels(service_id, str(status)).inc()
        self.latency.labels(service_id).observe(latency_s)
        for card in cards:
            if not isinstance(card, dict):
                continue
            topic = (card.get("source") or {}).get("topic") or {}
            rule = topic.get("code") if isinstance(topic, dict) else None
            self.cards.labels(service_id, str(rule or "?"), str(card.get("indicator") or "?")).inc()

    def record_audit_failure(self) -> None:
        self.audit_failures.inc()

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def observe_call(service_id: str, status: int, latency_s: float, cards: Iterable[dict[str, Any]]) -> None:
    """Count a call in every live app of this process (prefer ``app.state.metrics.observe_call``)."""
    cards = list(cards)
    for metrics in list(_LIVE):
        metrics.observe_call(service_id, status, latency_s, cards)


def record_audit_failure() -> None:
    """Hook for the audit writer: an audit record could not be committed (counted in every live app)."""
    for metrics in list(_LIVE):
        metrics.record_audit_failure()


def observe_queue_wait(seconds: float) -> None:
    """Hook for the engine queue: how long a call waited for a worker."""
    for metrics in list(_LIVE):
        metrics.observe_queue_wait(seconds)
