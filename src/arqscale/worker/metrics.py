"""The worker's Prometheus metrics, in a registry of its own (so tests can run many workers in one process).

``prometheus_client`` is imported when the metrics are first needed, not at start-up: it is ~12 ms of a worker's
cold start (it brings ``http.server``, ``wsgiref`` and ``urllib.request`` with it; bench/cold_start.py), spent
before the first job, which a scale-up waits for. Until ``load()`` (the first ``/metrics`` scrape, the first
read of ``registry``, or the worker process once its first jobs are done) every counter and gauge the worker
updates is a ``_Pending`` stand-in that keeps the calls made on it; ``load()`` builds the real metrics and
replays the calls in order, so every value is what it would have been. After that those attributes are
prometheus' own objects. The two histograms are the worker's own (``LocalHistogram``) from the start.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

# Job durations span no-op jobs (ms) to exports (minutes).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# Values of the `outcome` label of arqscale_worker_jobs_total.
OUTCOMES = ("complete", "retried", "dead", "put_back", "cancelled")

# Calls kept before ``load()`` at most: a worker nobody loads (a test's, an embedding's) loads on its own
# rather than keep every job's observations.
MAX_PENDING_CALLS = 10_000


class CounterChild(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class GaugeChild(Protocol):
    def set(self, value: float) -> None: ...


class LocalHistogram:
    """A histogram child for one thread (the worker's event loop, which also serves ``/metrics``): an observation is
    a list index and two additions, where prometheus' own ``Histogram`` takes a lock for its bucket and one for its
    sum. A worker observes two per job; without them a no-op job cost its worker 23.5 µs of CPU instead of 27.5
    (session 9, side by side). ``_HistogramCollector`` exports it as prometheus' ``Histogram`` would, sample for
    sample, so it needs no stand-in before ``load()``."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # prometheus' own bucket rule: the first upper bound at or above the value.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class _HistogramCollector:
    """Exports one ``LocalHistogram`` as the samples of a prometheus ``Histogram`` with a ``queue`` label."""

    def __init__(self, name: str, documentation: str, queue: str, histogram: LocalHistogram) -> None:
        self.name, self.documentation, self.queue, self.histogram = name, documentation, queue, histogram

    def collect(self) -> Iterator[Metric]:
        from prometheus_client import metrics
        from prometheus_client.metrics_core import Metric
        from prometheus_client.utils import floatToGoString

        h, labels = self.histogram, {"queue": self.queue}
        family = Metric(self.name, self.documentation, "histogram")
        total = 0.0
        for bound, count in zip((*h.bounds, math.inf), h.counts, strict=True):
            total += count
            le = floatToGoString(bound)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
            family.add_sample(self.name + "_bucket", {"le": le, **labels}, total)
        family.add_sample(self.name + "_count", labels, total)
        family.add_sample(self.name + "_sum", labels, h.sum)
        if metrics._use_created:  # prometheus' own switch (PROMETHEUS_DISABLE_CREATED_SERIES)
            family.add_sample(self.name + "_created", labels, h.created)
        yield family


class _Pending:
    """A metric child before ``load()``: its calls go to the owner's list, to be replayed on the real one."""

    __slots__ = ("_name", "_owner")

    def __init__(self, owner: WorkerMetrics, name: str) -> None:
        self._owner, self._name = owner, name

    def inc(self, amount: float = 1) -> None:
        self._owner._keep(self._name, "inc", amount)

    def set(self, value: float) -> None:
        self._owner._keep(self._name, "set", value)


class WorkerMetrics:
    def __init__(self, queue: str, concurrency: int) -> None:
        self.queue, self._concurrency = queue, concurrency
        self._registry: CollectorRegistry | None = None
        self._calls: list[tuple[str, str, float]] = []
        # Bound children: one dict lookup saved per job on the hot path.
        self.by_outcome: dict[str, CounterChild] = {o: _Pending(self, f"outcome:{o}") for o in OUTCOMES}
        self.redis_errors_q: CounterChild = _Pending(self, "redis_errors_q")
        self.pickups_q: CounterChild = _Pending(self, "pickups_q")
        self.lost_leases_q: CounterChild = _Pending(self, "lost_leases_q")
        self.stale_outcomes_q: CounterChild = _Pending(self, "stale_outcomes_q")
        self.swept_q: CounterChild = _Pending(self, "swept_q")
        self.in_flight_q: GaugeChild = _Pending(self, "in_flight_q")
        self.redis_up_q: GaugeChild = _Pending(self, "redis_up_q")
        self.draining_q: GaugeChild = _Pending(self, "draining_q")
        self.loop_lag_q: GaugeChild = _Pending(self, "loop_lag_q")
        self.stranded_q: GaugeChild = _Pending(self, "stranded_q")
        self.duration_q = LocalHistogram(DURATION_BUCKETS)
        self.wait_q = LocalHistogram(WAIT_BUCKETS)
        self.redis_up_q.set(0)

    @property
    def loaded(self) -> bool:
        return self._registry is not None

    @property
    def registry(self) -> CollectorRegistry:
        if self._registry is None:
            self.load()
        assert self._registry is not None
        return self._registry

    def _keep(self, name: str, method: str, value: float) -> None:
        self._calls.append((name, method, value))
        if len(self._calls) >= MAX_PENDING_CALLS:
            self.load()

    def load(self) -> None:
        """Import prometheus_client, build the metrics, replay what the stand-ins kept. Idempotent."""
        if self._registry is not None:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge

        queue = self.queue
        r = CollectorRegistry()
        jobs = Counter(
            "arqscale_worker_jobs", "Jobs finished by this worker, by outcome", ["queue", "outcome"], registry=r
        )
        duration, wait = "arqscale_worker_job_duration_seconds", "arqscale_worker_job_wait_seconds"
        r.register(_HistogramCollector(duration, "Run time of one try", queue, self.duration_q))
        r.register(_HistogramCollector(wait, "Time from a job's ready time to its start", queue, self.wait_q))
        in_flight = Gauge("arqscale_worker_jobs_in_flight", "Jobs running in this worker", ["queue"], registry=r)
        concurrency = Gauge("arqscale_worker_concurrency", "Configured jobs in flight", ["queue"], registry=r)
        redis_up = Gauge("arqscale_worker_redis_up", "1 when the last Redis call succeeded", ["queue"], registry=r)
        redis_errors = Counter(
            "arqscale_worker_redis_errors", "Redis calls that failed (then retried)", ["queue"], registry=r
        )
        draining = Gauge("arqscale_worker_draining", "1 once SIGTERM/SIGINT started the drain", ["queue"], registry=r)
        loop_lag = Gauge(
            "arqscale_worker_event_loop_lag_seconds", "Latest measured event-loop delay", ["queue"], registry=r
        )
        pickups = Counter("arqscale_worker_pickups", "Pickup script calls", ["queue"], registry=r)
        lost_leases = Counter(
            "arqscale_worker_lost_leases",
            "Running jobs this worker stopped because their lease ran out while it stalled or was cut off",
            ["queue"],
            registry=r,
        )
        stale_outcomes = Counter(
            "arqscale_worker_stale_outcomes",
            "Outcomes Redis dropped because the job's lease had passed to another pickup",
            ["queue"],
            registry=r,
        )
        swept = Counter(
            "arqscale_worker_swept_leases",
            "Expired leases (of any worker) this worker returned to the queue",
            ["queue"],
            registry=r,
        )
        stranded = Gauge(
            "arqscale_worker_stranded_jobs",
            "Jobs outside the queue's configured priority bands at start-up (`arqscale queue migrate` fixes them)",
            ["queue"],
            registry=r,
        )
        concurrency.labels(queue).set(self._concurrency)
        real: dict[str, CounterChild | GaugeChild] = {
            "in_flight_q": in_flight.labels(queue),
            "redis_up_q": redis_up.labels(queue),
            "redis_errors_q": redis_errors.labels(queue),
            "draining_q": draining.labels(queue),
            "loop_lag_q": loop_lag.labels(queue),
            "pickups_q": pickups.labels(queue),
            "lost_leases_q": lost_leases.labels(queue),
            "stale_outcomes_q": stale_outcomes.labels(queue),
            "swept_q": swept.labels(queue),
            "stranded_q": stranded.labels(queue),
        }
        by_outcome: dict[str, CounterChild] = {o: jobs.labels(queue, o) for o in OUTCOMES}
        real |= {f"outcome:{o}": child for o, child in by_outcome.items()}
        for name, method, value in self._calls:
            getattr(real[name], method)(value)
        self._calls = []
        for name, child in real.items():
            if not name.startswith("outcome:"):
                setattr(self, name, child)
        self.by_outcome = by_outcome
        self._registry = r
