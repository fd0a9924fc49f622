"""The worker's Prometheus metrics, in a registry of its own (so tests can run many workers in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Job durations span no-op jobs (ms) to exports (minutes).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# Values of the `outcome` label of arqscale_worker_jobs_total.
OUTCOMES = ("complete", "retried", "dead", "put_back", "cancelled")


class WorkerMetrics:
    def __init__(self, queue: str, concurrency: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "arqscale_worker_jobs", "Jobs finished by this worker, by outcome", ["queue", "outcome"], registry=r
        )
        self.duration = Histogram(
            "arqscale_worker_job_duration_seconds",
            "Run time of one try",
            ["queue"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.wait = Histogram(
            "arqscale_worker_job_wait_seconds",
            "Time from a job's ready time to its start",
            ["queue"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("arqscale_worker_jobs_in_flight", "Jobs running in this worker", ["queue"], registry=r)
        self.concurrency = Gauge("arqscale_worker_concurrency", "Configured jobs in flight", ["queue"], registry=r)
        self.redis_up = Gauge("arqscale_worker_redis_up", "1 when the last Redis call succeeded", ["queue"], registry=r)
        self.redis_errors = Counter(
            "arqscale_worker_redis_errors", "Redis calls that failed (then retried)", ["queue"], registry=r
        )
        self.draining = Gauge(
            "arqscale_worker_draining", "1 once SIGTERM/SIGINT started the drain", ["queue"], registry=r
        )
        self.loop_lag = Gauge(
            "arqscale_worker_event_loop_lag_seconds", "Latest measured event-loop delay", ["queue"], registry=r
        )
        self.pickups = Counter("arqscale_worker_pickups", "Pickup script calls", ["queue"], registry=r)
        self.lost_leases = Counter(
            "arqscale_worker_lost_leases",
            "Running jobs this worker stopped because their lease ran out while it stalled or was cut off",
            ["queue"],
            registry=r,
        )
        self.stale_outcomes = Counter(
            "arqscale_worker_stale_outcomes",
            "Outcomes Redis dropped because the job's lease had passed to another pickup",
            ["queue"],
            registry=r,
        )
        self.swept = Counter(
            "arqscale_worker_swept_leases",
            "Expired leases (of any worker) this worker returned to the queue",
            ["queue"],
            registry=r,
        )
        self.stranded = Gauge(
            "arqscale_worker_stranded_jobs",
            "Jobs outside the queue's configured priority bands at start-up (`arqscale queue migrate` fixes them)",
            ["queue"],
            registry=r,
        )
        # Bound children: one dict lookup saved per job on the hot path.
        self.by_outcome = {o: self.jobs.labels(queue, o) for o in OUTCOMES}
        self.duration_q = self.duration.labels(queue)
        self.wait_q = self.wait.labels(queue)
        self.in_flight_q = self.in_flight.labels(queue)
        self.redis_up_q = self.redis_up.labels(queue)
        self.redis_errors_q = self.redis_errors.labels(queue)
        self.draining_q = self.draining.labels(queue)
        self.loop_lag_q = self.loop_lag.labels(queue)
        self.pickups_q = self.pickups.labels(queue)
        self.lost_leases_q = self.lost_leases.labels(queue)
        self.stale_outcomes_q = self.stale_outcomes.labels(queue)
        self.swept_q = self.swept.labels(queue)
        self.stranded_q = self.stranded.labels(queue)
        self.concurrency.labels(queue).set(concurrency)
        self.redis_up_q.set(0)
