"""The Prometheus exposition of the exporter: queue gauges and the exporter's own health.

The text is rendered once per refresh (``MetricsPage.update``, the cache's refresh hook) and served
as bytes, so a scrape costs a memory copy however many queues there are. While Redis is down the
per-queue gauges are left out rather than repeated stale: ``arqscale_exporter_redis_up 0`` says why,
and a Prometheus-fed HPA sees no series and holds, as it does on the External Metrics API's 503.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from arqscale.models import QueueCounts
from arqscale.snapshot import SnapshotCache

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> (help, value of one queue). These names are the contract with dashboards, the HPA and KEDA.
QUEUE_GAUGES: dict[str, tuple[str, str]] = {
    "bullmq_queue_waiting": ("Jobs ready to run now and not running.", "waiting"),
    "bullmq_queue_active": ("Jobs running now.", "active"),
    "bullmq_queue_delayed": ("Jobs deferred to a later time, retry backoff included.", "delayed"),
    "bullmq_queue_paused": ("Ready jobs held by a paused queue.", "paused"),
    "bullmq_queue_completed": ("Completed jobs still retained.", "completed"),
    "bullmq_queue_failed": ("Failed jobs retained (the dead-letter store).", "failed"),
    "arqscale_queue_backlog": ("Waiting plus active jobs: stays above zero while jobs still run.", "backlog"),
    "arqscale_queue_oldest_waiting_seconds": ("Age of the oldest waiting job, 0 when none.", "oldest_waiting_seconds"),
}
# bullmq_job_count{state}: BullMQ's own exporter's name for the same numbers.
JOB_COUNT_STATES: tuple[tuple[str, str], ...] = (
    ("waiting", "waiting"),
    ("active", "active"),
    ("delayed", "delayed"),
    ("paused", "paused"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("waiting-children", "waiting_children"),
)


def queue_value(counts: QueueCounts, field: str) -> float:
    """One number of a queue by field name (``backlog`` included); shared with the metrics API."""
    if field == "backlog":
        return counts.backlog
    value: float = getattr(counts, field)
    return value


class ExporterCollector(Collector):
    """Yields the current cache state; no I/O, so it is safe inside any render."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        snap = self.cache.snapshot if self.cache.health.redis_up else None
        if snap is not None:
            yield from self._queue_metrics(list(snap.counts.values()))
        yield from self._health_metrics(snap.taken_at if snap is not None else None)

    def _queue_metrics(self, queues: list[QueueCounts]) -> Iterator[Metric]:
        for name, (help_text, field) in QUEUE_GAUGES.items():
            gauge = GaugeMetricFamily(name, help_text, labels=["queue"])
            for counts in queues:
                gauge.add_metric([counts.queue], queue_value(counts, field))
            yield gauge
        by_state = GaugeMetricFamily("bullmq_job_count", "Jobs per queue and BullMQ state.", labels=["queue", "state"])
        for counts in queues:
            for state, field in JOB_COUNT_STATES:
                by_state.add_metric([counts.queue, state], queue_value(counts, field))
        yield by_state

    def _health_metrics(self, taken_at: float | None) -> Iterator[Metric]:
        health = self.cache.health
        yield GaugeMetricFamily(
            "arqscale_exporter_redis_up", "1 when the last refresh read Redis, 0 when it failed.", int(health.redis_up)
        )
        yield GaugeMetricFamily(
            "arqscale_exporter_refresh_duration_seconds", "Duration of the last refresh.", health.last_duration
        )
        yield CounterMetricFamily("arqscale_exporter_refreshes", "Successful refreshes since start.", health.refreshes)
        yield CounterMetricFamily(
            "arqscale_exporter_refresh_errors", "Failed refreshes (Redis down or erroring) since start.", health.errors
        )
        yield GaugeMetricFamily("arqscale_exporter_queues", "Queues this exporter counts.", len(self.cache.specs))
        if taken_at is not None:
            yield GaugeMetricFamily(
                "arqscale_exporter_last_refresh_timestamp_seconds",
                "Unix time of the counts being served.",
                taken_at,
            )


class MetricsPage:
    """The rendered ``/metrics`` body, replaced after every refresh."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ExporterCollector(cache))
        self.body = generate_latest(self.registry)

    def update(self, cache: SnapshotCache) -> None:
        self.body = generate_latest(self.registry)
