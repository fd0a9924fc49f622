"""The Prometheus exposition of the exporter: queue gauges and the exporter's own health.

The page is rendered once per refresh (``MetricsPage.update``, the cache's refresh hook) and served
as bytes, so a scrape costs a memory copy however many queues there are. Rendering is our own short
loop over pre-escaped label strings rather than prometheus_client's generic collector walk: with
1,000 queues (16,000 samples) that walk took ~150 ms of event-loop time per refresh on the benchmark
machine, during which every request waited. Rendering also yields to the loop between chunks of
queues. ``promtool check metrics`` lints the result in the tests.

While Redis is down the per-queue gauges are left out rather than repeated stale:
``arqscale_exporter_redis_up 0`` says why, and a Prometheus-fed HPA sees no series and holds, as it
does on the External Metrics API's 503.
"""

from __future__ import annotations

import asyncio
import gzip

from arqscale.core.models import QueueCounts
from arqscale.exporter.snapshot import SnapshotCache

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GZIP_ABOVE = 16_384  # bytes; smaller pages are not worth a compression
YIELD_EVERY = 50

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


# Counters of arq queues, from the totals hash the scripts increment (docs/events.md): name -> (help, field, scale).
# bullmq_job_completed_total and bullmq_job_failed_total are BullMQ's own exporter's names (Queue.
# exportPrometheusMetrics); BullMQ's "failed" is a job that failed for good, after its retries: our `dead`.
QUEUE_COUNTERS: dict[str, tuple[str, str, float]] = {
    "bullmq_job_completed_total": ("Total number of completed jobs.", "completed", 1),
    "bullmq_job_failed_total": ("Total number of failed jobs (failed for good: dead-lettered).", "dead", 1),
    "arqscale_job_enqueued_total": (
        "Jobs enqueued (plain arq producers' counted when first picked up).",
        "enqueued",
        1,
    ),
    "arqscale_job_started_total": ("Tries started.", "started", 1),
    "arqscale_job_failed_tries_total": ("Tries that failed (each followed by a retry or a dead letter).", "failed", 1),
    "arqscale_job_retried_total": ("Failed tries that were retried.", "retried", 1),
    "arqscale_job_dead_total": ("Jobs dead-lettered.", "dead", 1),
    "arqscale_job_cancelled_total": ("Jobs cancelled.", "cancelled", 1),
    "arqscale_job_requeued_total": (
        "Jobs put back in line without a failure (stalled, drain, dead letter).",
        "requeued",
        1,
    ),
    "arqscale_job_run_seconds_total": ("Summed run time of finished tries, seconds.", "run_ms", 0.001),
}


def queue_value(counts: QueueCounts, field: str) -> float:
    """One number of a queue by field name (``backlog`` included); shared with the metrics API."""
    if field == "backlog":
        return counts.backlog
    value: float = getattr(counts, field)
    return value


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    # Counts are ints and print as such; repr() of a float is exact and parses in Prometheus.
    return str(value) if isinstance(value, int) else repr(float(value))


def _family(name: str, help_text: str, kind: str = "gauge") -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


class MetricsPage:
    """The rendered ``/metrics`` body, replaced after every refresh (and after every failed one)."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache
        # Per queue, the label part of each sample line, escaped once: queues are fixed at start-up.
        self._labels = {name: f'{{queue="{escape_label(name)}"}} ' for name in cache.specs}
        self._state_labels = {
            name: [(field, f'{{queue="{escape_label(name)}",state="{state}"}} ') for state, field in JOB_COUNT_STATES]
            for name in cache.specs
        }
        self.body = self._health().encode()
        self._gzipped: tuple[bytes, bytes] | None = None  # (body, its gzip), for the current body only

    async def update(self, cache: SnapshotCache) -> None:
        snap = cache.snapshot if cache.health.redis_up else None
        parts: list[str] = []
        if snap is not None:
            queues = list(snap.counts.values())
            for name, (help_text, field) in QUEUE_GAUGES.items():
                parts.append(_family(name, help_text))
                for i, counts in enumerate(queues):
                    parts.append(f"{name}{self._labels[counts.queue]}{number(queue_value(counts, field))}\n")
                    if i % YIELD_EVERY == YIELD_EVERY - 1:
                        await asyncio.sleep(0)
            parts.append(_family("bullmq_job_count", "Jobs per queue and BullMQ state."))
            for i, counts in enumerate(queues):
                for field, labels in self._state_labels[counts.queue]:
                    parts.append(f"bullmq_job_count{labels}{number(queue_value(counts, field))}\n")
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
            for name, (help_text, field, scale) in QUEUE_COUNTERS.items():
                parts.append(_family(name, help_text, "counter"))
                for queue, totals in snap.totals.items():
                    value = totals.get(field, 0)
                    parts.append(f"{name}{self._labels[queue]}{number(value * scale if scale != 1 else value)}\n")
        parts.append(self._health(snap.taken_at if snap is not None else None))
        self.body = "".join(parts).encode()

    async def gzipped(self) -> bytes:
        """The body gzipped, once per rendered page: 1,000 queues make ~700 KB of text, ~10 times less gzipped.

        zlib releases the GIL, so compressing in a thread keeps the event loop answering meanwhile.
        """
        body = self.body
        cached = self._gzipped
        if cached is None or cached[0] is not body:
            cached = (body, await asyncio.to_thread(gzip.compress, body, 1))
            self._gzipped = cached
        return cached[1]

    def _health(self, taken_at: float | None = None) -> str:
        h = self.cache.health
        lines = [
            _family("arqscale_exporter_redis_up", "1 when the last refresh read Redis, 0 when it failed."),
            f"arqscale_exporter_redis_up {int(h.redis_up)}\n",
            _family("arqscale_exporter_refresh_duration_seconds", "Duration of the last refresh, rendering included."),
            f"arqscale_exporter_refresh_duration_seconds {number(h.last_duration)}\n",
            _family("arqscale_exporter_refreshes_total", "Successful refreshes since start.", "counter"),
            f"arqscale_exporter_refreshes_total {h.refreshes}\n",
            _family(
                "arqscale_exporter_refresh_errors_total",
                "Failed refreshes (Redis down or erroring) since start.",
                "counter",
            ),
            f"arqscale_exporter_refresh_errors_total {h.errors}\n",
            _family("arqscale_exporter_queues", "Queues this exporter counts."),
            f"arqscale_exporter_queues {len(self.cache.specs)}\n",
        ]
        if taken_at is not None:
            lines.append(_family("arqscale_exporter_last_refresh_timestamp_seconds", "Unix time of the counts served."))
            lines.append(f"arqscale_exporter_last_refresh_timestamp_seconds {number(taken_at)}\n")
        return "".join(lines)
