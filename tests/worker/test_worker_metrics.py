"""The worker's metrics before and after ``load()``: calls made on the stand-ins end as the same values."""

from __future__ import annotations

import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from arqscale.worker.metrics import DURATION_BUCKETS, MAX_PENDING_CALLS, WAIT_BUCKETS, WorkerMetrics
from exporter_support import promtool


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
        m.pickups_q.inc()
        m.duration_q.observe(0.01)  # the worker's own histogram: kept as counts, not as calls
    assert m.loaded
    assert f'arqscale_worker_pickups_total{{queue="q"}} {float(MAX_PENDING_CALLS)}' in page(m)
    assert f'arqscale_worker_job_duration_seconds_count{{queue="q"}} {float(MAX_PENDING_CALLS)}' in page(m)


amounts = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.sampled_from([*DURATION_BUCKETS, *WAIT_BUCKETS]),  # on a bound: prometheus counts it in that bucket
)


@settings(max_examples=200, deadline=None)
@given(durations=st.lists(amounts, max_size=60), waits=st.lists(amounts, max_size=60))
def test_the_workers_histograms_read_as_prometheus_own_would(durations: list[float], waits: list[float]) -> None:
    # The worker observes into LocalHistogram (no lock per observation); a scrape must see what prometheus'
    # Histogram with the same name, help, label and buckets would have shown, sample for sample.
    m = WorkerMetrics("q", 1)
    m.load()
    r = CollectorRegistry()
    duration = Histogram(
        "arqscale_worker_job_duration_seconds", "Run time of one try", ["queue"], buckets=DURATION_BUCKETS, registry=r
    )
    wait = Histogram(
        "arqscale_worker_job_wait_seconds",
        "Time from a job's ready time to its start",
        ["queue"],
        buckets=WAIT_BUCKETS,
        registry=r,
    )
    their_duration, their_wait = duration.labels("q"), wait.labels("q")  # the worker's exist from the start
    for x in durations:
        m.duration_q.observe(x)
        their_duration.observe(x)
    for x in waits:
        m.wait_q.observe(x)
        their_wait.observe(x)
    ours = [line for line in page(m) if "_job_duration_seconds" in line or "_job_wait_seconds" in line]
    theirs = [line for line in generate_latest(r).decode().splitlines() if "_created" not in line]
    assert ours == theirs


def test_the_workers_page_passes_promtool() -> None:
    m = WorkerMetrics("q", 4)
    play(m)
    m.wait_q.observe(7200.0)  # above every bound: the +Inf bucket
    text = generate_latest(m.registry).decode()
    checked = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'arqscale_worker_job_wait_seconds_bucket{le="+Inf",queue="q"} 2.0' in text
