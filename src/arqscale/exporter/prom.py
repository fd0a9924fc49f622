"""The Prometheus exposition of the exporter: queue gauges and the exporter's own health.

The page is rendered and gzipped once per refresh (``MetricsPage.update``, the cache's refresh hook)
and served as bytes, so a scrape costs a memory copy however many queues there are. Rendering is our
own: prometheus_client's generic collector walk took ~150 ms of event-loop time per refresh at 1,000
queues (16,000 samples), during which every request waited. Each family is a template of pre-escaped
sample lines filled with one ``%`` per refresh, and rendering yields to the loop between families.
``promtool check metrics`` lints the result in the tests.

While Redis is down the per-queue gauges are left out rather than repeated stale:
``arqscale_exporter_redis_up 0`` says why, and a Prometheus-fed HPA sees no series and holds, as it
does on the External Metrics API's 503.
"""

from __future__ import annotations

import asyncio
import gzip
from operator import attrgetter

from arqscale.core.models import QueueCounts
from arqscale.exporter import wait_target
from arqscale.exporter.snapshot import SnapshotCache

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GZIP_ABOVE = 16_384  # bytes; smaller pages are not worth a compression

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


def _template(name: str, labels: list[str]) -> str:
    """One sample line per label string, its value left as a ``%s`` slot (``%`` in a label doubled)."""
    return "".join(f"{name}{label.replace('%', '%%')}%s\n" for label in labels)


class MetricsPage:
    """The rendered ``/metrics`` body and its gzip, both replaced after every refresh (and every failed one).

    Queues are fixed at start-up, so each family's sample lines are a template built once, one ``%s`` per
    value, filled with one ``%`` per family per refresh: at 1,000 queues (25,000 samples) ~2 ms instead of
    ~11 ms for a loop of f-strings. ``%s`` of an int is ``str``, of a float ``repr`` (shortest
    round-trip), exactly what ``number`` writes.
    """

    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache
        # Per queue, the label part of each sample line, escaped once: queues are fixed at start-up.
        self._labels = {name: f'{{queue="{escape_label(name)}"}} ' for name in cache.specs}
        self._templates: dict[tuple[str, tuple[str, ...]], str] = {}
        # The body and its gzip (None when too small to be worth it), always replaced together.
        self.current: tuple[bytes, bytes | None] = (self._health().encode(), None)
        # Set once the first refresh (or failed one) has its page. Until then the body above says nothing
        # about Redis, and a scrape at start-up must wait for the page rather than get it: rendering yields
        # to the loop, so a request can see the first snapshot before its page is done. Later scrapes get
        # the previous complete page while the next one renders.
        self.rendered = asyncio.Event()

    @property
    def body(self) -> bytes:
        return self.current[0]

    def _family_template(self, name: str, queues: tuple[str, ...]) -> str:
        key = (name, queues)
        template = self._templates.get(key)
        if template is None:
            if name == "bullmq_job_count":
                states = [state for state, _ in JOB_COUNT_STATES]
                labels = [f'{{queue="{escape_label(queue)}",state="{state}"}} ' for queue in queues for state in states]
            else:
                labels = [self._labels.get(queue) or f'{{queue="{escape_label(queue)}"}} ' for queue in queues]
            template = self._templates[key] = _template(name, labels)
        return template

    async def update(self, cache: SnapshotCache) -> None:
        try:
            await self._render(cache)
        finally:
            self.rendered.set()

    async def _render(self, cache: SnapshotCache) -> None:
        snap = cache.snapshot if cache.health.redis_up else None
        parts: list[str] = []
        if snap is not None:
            names = tuple(snap.counts)
            queues = list(snap.counts.values())
            for name, (help_text, field) in QUEUE_GAUGES.items():
                parts.append(_family(name, help_text))
                parts.append(self._family_template(name, names) % tuple(map(attrgetter(field), queues)))
                await asyncio.sleep(0)  # ~0.1-0.3 ms per family at 1,000 queues: requests go in between
            parts.extend(self._wait_target())
            parts.append(_family("bullmq_job_count", "Jobs per queue and BullMQ state."))
            fields = [attrgetter(field) for _, field in JOB_COUNT_STATES]
            values = tuple(get(counts) for counts in queues for get in fields)
            parts.append(self._family_template("bullmq_job_count", names) % values)
            await asyncio.sleep(0)
            counted = tuple(snap.totals)
            totals = list(snap.totals.values())
            for name, (help_text, field, scale) in QUEUE_COUNTERS.items():
                parts.append(_family(name, help_text, "counter"))
                counter: tuple[float, ...]
                if scale == 1:
                    counter = tuple(t.get(field, 0) for t in totals)
                else:
                    counter = tuple(float(t.get(field, 0) * scale) for t in totals)
                parts.append(self._family_template(name, counted) % counter)
                await asyncio.sleep(0)
        parts.append(self._health(snap.taken_at if snap is not None else None))
        body = "".join(parts).encode()
        # zlib releases the GIL, so compressing in a thread keeps the event loop answering meanwhile; the
        # body and its gzip are swapped together, so a scrape never waits for a compression.
        gzipped = await asyncio.to_thread(gzip.compress, body, 1) if len(body) > GZIP_ABOVE else None
        self.current = (body, gzipped)

    def _wait_target(self) -> list[str]:
        """The latency-target signal and its inputs, for the queues that ask for it (wait_target)."""
        estimates = self.cache.wait_target.estimates
        if not estimates:
            return []
        families = (
            (wait_target.METRIC, "Workers that keep the wait under the queue's target_wait_seconds.", "workers"),
            ("arqscale_queue_arrival_rate", "Jobs entering the line per second (smoothed).", "arrival_rate"),
            (
                "arqscale_queue_service_seconds",
                "Seconds one try runs (smoothed; absent until one finished).",
                "service_seconds",
            ),
        )
        parts = []
        for name, help_text, attr in families:
            parts.append(_family(name, help_text))
            for queue, estimate in estimates.items():
                value = getattr(estimate, attr)
                if value is not None:
                    parts.append(f"{name}{self._labels[queue]}{number(float(value))}\n")
        return parts

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
