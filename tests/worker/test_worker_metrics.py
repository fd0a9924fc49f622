"""The worker's metrics before and after ``load()``: calls made on the stand-ins end as the same values."""

from __future__ import annotations

from prometheus_client import generate_latest

from arqscale.worker.metrics import MAX_PENDING_CALLS, WorkerMetrics


def play(m: WorkerMetrics) -> None:
    m.pickups_q.inc()
    m.swept_q.inc(3)
    m.by_outcome["complete"].inc(5)
    m.by_outcome["dead"].inc()
    m.in_flight_q.set(7)
    m.in_flight_q.set(2)  # a gauge keeps its last value
    m.redis_up_q.set(1)
    m.loop_lag_q.set(0.25)
    m.duration_q.observe(0.003)
    m.duration_q.observe(42.0)
    m.wait_q.observe(0.0)


def page(m: WorkerMetrics) -> list[str]:
    # ``*_created`` samples are the time each metric was made: they differ between two instances.
    return [line for line in generate_latest(m.registry).decode().splitlines() if "_created" not in line]


def test_calls_before_load_are_replayed_exactly() -> None:
    deferred = WorkerMetrics("q", 12)
    play(deferred)
    assert not deferred.loaded
    eager = WorkerMetrics("q", 12)
    eager.load()
    play(eager)
    assert page(deferred) == page(eager)
    text = "\n".join(page(deferred))
    assert 'arqscale_worker_jobs_total{outcome="complete",queue="q"} 5.0' in text
    assert 'arqscale_worker_jobs_in_flight{queue="q"} 2.0' in text
    assert 'arqscale_worker_concurrency{queue="q"} 12.0' in text
    assert 'arqscale_worker_job_duration_seconds_count{queue="q"} 2.0' in text
    # Loaded: the attributes are prometheus' own, and later calls go straight to them.
    deferred.pickups_q.inc()
    assert 'arqscale_worker_pickups_total{queue="q"} 2.0' in "\n".join(page(deferred))


def test_a_new_worker_says_redis_is_not_up_yet() -> None:
    assert 'arqscale_worker_redis_up{queue="q"} 0.0' in page(WorkerMetrics("q", 1))


def test_a_metrics_object_nobody_loads_loads_itself_rather_than_keep_every_call() -> None:
    m = WorkerMetrics("q", 1)
    for _ in range(MAX_PENDING_CALLS):
        m.duration_q.observe(0.01)
    assert m.loaded
    assert f'arqscale_worker_job_duration_seconds_count{{queue="q"}} {float(MAX_PENDING_CALLS)}' in page(m)
