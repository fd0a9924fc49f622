"""The latency-target signal (arqscale.exporter.wait_target): the formula, the smoothing, the hold.

Pure: observations are generated (hypothesis) or written out, no Redis. The exporter's serving of the
signal is tested in test_wait_target_served.py.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arqscale.exporter.wait_target import Observation, Settings, State, step, workers_needed


def test_worked_example_from_the_docs() -> None:
    """docs/autoscaling.md: 2 jobs/s of 3 s each, concurrency 4, 120 waiting, target 30 s."""
    s = Settings(target_wait_seconds=30, concurrency=4)
    busy, backlog = workers_needed(arrival_rate=2.0, service_seconds=3.0, waiting=120, active=6, s=s)
    assert busy == pytest.approx(1.5)  # 2 * 3 / 4: six jobs in flight need six slots
    assert backlog == pytest.approx(3.0)  # 120 * 3 / (30 * 4): 120 jobs drained in 30 s by 4-slot workers
    assert busy + backlog == pytest.approx(4.5)  # the HPA (averageValue 1) asks for ceil(4.5) = 5


def run(observations: list[Observation], s: Settings) -> list[tuple[State, float, float]]:
    state, out = State(), []
    for obs in observations:
        state, est = step(state, obs, s)
        out.append((state, est.raw_workers, est.workers))
    return out


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(0.1, 50),
    service=st.floats(0.05, 20),
    concurrency=st.integers(1, 50),
    totals=st.booleans(),
)
def test_a_steady_flow_converges_to_littles_law(rate: float, service: float, concurrency: int, totals: bool) -> None:
    """Constant arrivals and service: the estimate ends at rate * service / concurrency, with or without the
    totals hash (without it, the service time comes from Little's law on the running count)."""
    s = Settings(target_wait_seconds=30, concurrency=concurrency, smoothing_seconds=10, hold_seconds=5)
    running = rate * service
    obs = [
        Observation(
            at=float(t),
            waiting=0,
            active=round(running) if not totals else 0,
            finished=rate * t,
            arrivals=rate * t if totals else None,
            run_ms=rate * t * service * 1000 if totals else None,
        )
        for t in range(200)
    ]
    if not totals:  # the running count is an integer: the service time it implies is round(L) / rate
        service = round(running) / rate
    _, raw, published = run(obs, s)[-1]
    want = max(rate * service, 0 if totals else round(running)) / concurrency
    assert raw == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert published == pytest.approx(want, rel=1e-3, abs=1e-3)


@settings(max_examples=150, deadline=None)
@given(
    waiting=st.lists(st.integers(0, 10_000), min_size=2, max_size=60),
    rate=st.floats(0, 20),
    hold=st.floats(1, 60),
)
def test_the_published_value_is_the_highest_of_the_hold(waiting: list[int], rate: float, hold: float) -> None:
    """It rises at once with a burst and falls only once the need stayed lower for the hold."""
    s = Settings(target_wait_seconds=10, concurrency=2, smoothing_seconds=30, hold_seconds=hold)
    obs = [
        Observation(at=float(t), waiting=w, active=0, finished=rate * t, arrivals=rate * t, run_ms=rate * t * 500)
        for t, w in enumerate(waiting)
    ]
    results = run(obs, s)
    raws = [r for _, r, _ in results]
    for t, (_, raw, published) in enumerate(results):
        assert published >= round(raw, 3) - 1e-9
        in_hold = [raws[i] for i in range(t + 1) if i > t - hold]
        assert published == pytest.approx(round(max(in_hold), 3), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    base=st.integers(0, 5000),
    more=st.integers(1, 5000),
    rate=st.floats(0, 20),
    service=st.one_of(st.none(), st.floats(0.01, 60)),
    active=st.integers(0, 200),
)
def test_more_waiting_never_asks_for_fewer_workers(
    base: int, more: int, rate: float, service: float | None, active: int
) -> None:
    s = Settings(target_wait_seconds=30, concurrency=5)
    low = sum(workers_needed(rate, service, base, active, s))
    high = sum(workers_needed(rate, service, base + more, active, s))
    assert high > low >= 0


def test_unknown_service_time_is_taken_as_the_target() -> None:
    """Before a first try finished: one slot per waiting job (pessimistic, and brief)."""
    s = Settings(target_wait_seconds=30, concurrency=10)
    state, est = step(State(), Observation(at=0, waiting=200, active=0, finished=0), s)
    assert est.service_seconds is None and est.workers == pytest.approx(20.0)
    _, est = step(state, Observation(at=1, waiting=200, active=0, finished=0), s)
    assert est.service_seconds is None


def test_a_counter_reset_is_no_progress_not_a_negative_rate() -> None:
    s = Settings(target_wait_seconds=30, concurrency=1)
    state, _ = step(State(), Observation(0, 0, 0, finished=100, arrivals=100, run_ms=1e5), s)
    state, est = step(state, Observation(1, 0, 0, finished=0, arrivals=0, run_ms=0), s)
    assert est.arrival_rate == 0 and math.isfinite(est.workers) and est.workers >= 0


def test_a_burst_is_forgotten_soon_after_it_drained() -> None:
    """300 jobs at once on a steady 2 jobs/s of 1 s: the backlog term takes the burst; once it drained, the
    busy term is back near the steady flow within a fraction of the smoothing time (the faster average)."""
    s = Settings(target_wait_seconds=10, concurrency=1, smoothing_seconds=30, hold_seconds=1)
    state, arrivals, finished, waiting = State(), 0.0, 0.0, 0
    steady = 2.0 * 1.0 / 1  # Little's law: 2 workers
    peak = 0.0
    for t in range(200):
        arrivals += 2
        if t == 100:
            arrivals += 300
            waiting += 300
        served = min(waiting, 30)  # drained over ten seconds
        waiting -= served
        finished += 2 + served
        state, est = step(state, Observation(t, waiting, 2, finished, arrivals, finished * 1000), s)
        if t == 100:
            peak = est.raw_workers
        if t == 125:  # 15 s after the burst drained: half the smoothing time
            assert est.busy_workers < steady * 1.5, est
    assert peak > 30  # the burst showed at once: 300 waiting jobs of 1 s within 10 s
