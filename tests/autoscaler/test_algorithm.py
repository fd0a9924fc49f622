"""The HPA controller's arithmetic (arqscale.autoscaler.algorithm), without processes.

Worked examples are computed by hand from kubernetes' horizontal.go and replica_calculator.go; the
properties hold for any HPA, metric value and replica count hypothesis generates.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from arqscale.autoscaler import hpa as hpa_mod
from arqscale.autoscaler.algorithm import (
    ControllerState,
    average_value_replicas,
    combine,
    reconcile,
    scale_down_limit,
    scale_up_limit,
    tolerances,
    value_replicas,
)
from arqscale.autoscaler.hpa import Hpa, Policy, ScalingRules
from arqscale.core.spec import parse_queues

TOL = (0.1, 0.1)


def chart_hpa(min_replicas: int = 1, max_replicas: int = 10, target: int = 20_000) -> Hpa:
    metric = hpa_mod.ExternalMetric("arqscale_queue_backlog", {"queue": "q"}, "AverageValue", target)
    return Hpa("w", min_replicas, max_replicas, (metric,), hpa_mod.parse_behavior(hpa_mod.CHART_BEHAVIOR))


def test_average_value_is_sum_over_target_outside_the_tolerance() -> None:
    # 150 jobs of backlog, 20 per replica, 2 replicas: ratio 3.75 -> ceil(150/20) = 8.
    assert average_value_replicas(150_000, 20_000, 2, TOL) == 8
    # 42 over 2 replicas at 20 each: ratio 1.05 is within 10 %: stay at 2.
    assert average_value_replicas(42_000, 20_000, 2, TOL) == 2
    # 0 replicas: 0/0 is NaN in Go, never within: ceil(0) = 0; anything above 0 asks for ceil(sum/target).
    assert average_value_replicas(0, 20_000, 0, TOL) == 0
    assert average_value_replicas(1, 20_000, 0, TOL) == 1


def test_value_target_uses_ready_pods() -> None:
    # Value 100 against 50: ratio 2, 3 ready of 4 in spec: ceil(2 * 3) = 6.
    assert value_replicas(100_000, 50_000, 4, 3, TOL) == 6
    assert value_replicas(52_000, 50_000, 4, 3, TOL) == 4  # within tolerance: spec replicas
    assert value_replicas(120_000, 50_000, 0, 0, TOL) == 3  # from zero: ceil(ratio)


def test_a_failed_metric_never_lets_the_others_scale_down() -> None:
    assert combine([3, None], spec_replicas=5) is None
    assert combine([7, None], spec_replicas=5) == 7
    assert combine([None, None], spec_replicas=5) is None
    assert combine([2, 4], spec_replicas=3) == 4


def test_chart_behavior_scales_up_by_100_percent_or_4_pods_per_15s() -> None:
    h = chart_hpa(max_replicas=50)
    d = reconcile(h, ControllerState(), current=1, proposal=40, now=0.0)
    assert d.desired == 5 and d.reason == "ScaleUpLimit"  # max(1 * 2, 1 + 4)
    d2 = reconcile(h, d.state, current=5, proposal=40, now=5.0)
    assert d2.desired == 5  # the period started at 1 replica: still max(2, 5)
    d3 = reconcile(h, d2.state, current=5, proposal=40, now=15.5)
    assert d3.desired == 10  # a new period from 5: max(10, 9)


def test_chart_behavior_scales_down_after_the_window_by_half_a_minute() -> None:
    h = chart_hpa()
    state = ControllerState()
    d = reconcile(h, state, current=10, proposal=10, now=0.0)
    for t in range(15, 300, 15):
        d = reconcile(h, d.state, current=10, proposal=1, now=float(t))
        assert d.desired == 10, t  # 300 s window: the 10 at t=0 is still the highest
    d = reconcile(h, d.state, current=10, proposal=1, now=301.0)
    assert d.desired == 5  # 50 % per 60 s
    d = reconcile(h, d.state, current=5, proposal=1, now=316.0)
    assert d.desired == 5  # the 60 s period began at 10: 10 * 0.5 = 5
    d = reconcile(h, d.state, current=5, proposal=1, now=362.0)
    assert d.desired == 2  # int(5 * 0.5)


def test_outside_min_max_goes_straight_to_the_bound() -> None:
    h = chart_hpa(min_replicas=2, max_replicas=4)
    assert reconcile(h, ControllerState(), current=1, proposal=None, now=0).desired == 2
    assert reconcile(h, ControllerState(), current=9, proposal=None, now=0).desired == 4
    assert reconcile(h, ControllerState(), current=0, proposal=5, now=0).desired == 0  # scaling disabled


rules = st.builds(
    ScalingRules,
    stabilization_window_seconds=st.integers(0, 600),
    select_policy=st.sampled_from(["Max", "Min", "Disabled"]),
    policies=st.lists(
        st.builds(
            Policy,
            type=st.sampled_from(["Pods", "Percent"]),
            value=st.integers(1, 200),
            period_seconds=st.integers(1, 600),
        ),
        min_size=1,
        max_size=3,
    ).map(tuple),
)


@st.composite
def hpas(draw: st.DrawFn) -> Hpa:
    lo = draw(st.integers(1, 20))
    hi = draw(st.integers(lo, 40))
    up, down = draw(rules), draw(rules)
    metric = hpa_mod.ExternalMetric("m", {"queue": "q"}, "AverageValue", draw(st.integers(1, 100_000)))
    return Hpa("h", lo, hi, (metric,), hpa_mod.Behavior(up, down))


@settings(max_examples=300, deadline=None)
@given(
    h=hpas(),
    proposals=st.lists(st.one_of(st.none(), st.integers(0, 100)), min_size=1, max_size=40),
    step=st.floats(1, 60),
)
def test_a_run_stays_within_min_max_and_the_policies(h: Hpa, proposals: list[int | None], step: float) -> None:
    state, current, now = ControllerState(), h.min_replicas, 0.0
    for proposal in proposals:
        before = state
        d = reconcile(h, state, current, proposal, now)
        assert h.min_replicas <= d.desired <= h.max_replicas
        if proposal is None:
            assert d.desired == current
        elif d.desired > current:
            assert d.desired <= max(
                scale_up_limit(current, before.up_events, before.down_events, h.behavior.scale_up, now), current
            )
            assert d.desired <= proposal  # never past what the metrics asked
        elif d.desired < current:
            assert d.desired >= min(
                scale_down_limit(current, before.up_events, before.down_events, h.behavior.scale_down, now), current
            )
            assert d.desired >= proposal
            # The down window: no recent recommendation (within it) was above what we scale to.
            window = h.behavior.scale_down.stabilization_window_seconds
            recent = [r.replicas for r in before.recommendations if r.at > now - window]
            assert (
                all(r <= d.desired for r in recent)
                or d.desired == h.min_replicas
                or d.desired >= min(recent, default=0)
            )
        state, current, now = d.state, d.desired, now + step


@settings(max_examples=200, deadline=None)
@given(h=hpas(), usage=st.integers(0, 2_000_000), status=st.integers(1, 50))
def test_within_tolerance_means_no_change(h: Hpa, usage: int, status: int) -> None:
    target = h.metrics[0].target_milli
    proposal = average_value_replicas(usage, target, status, tolerances(h))
    ratio = usage / (target * status)
    if 0.9 <= ratio <= 1.1:
        assert proposal == status
    else:
        assert proposal == math.ceil(usage / target)


@settings(max_examples=100, deadline=None)
@given(usage=st.integers(0, 500_000), start=st.integers(1, 10))
def test_a_steady_metric_settles_at_its_ceiling_and_stays(usage: int, start: int) -> None:
    """With the chart's behavior, a constant backlog ends at clamp(ceil(backlog / 20)) without oscillating."""
    h = chart_hpa()
    state, current = ControllerState(), start
    seen = [current]
    for tick in range(80):  # 20 minutes of 15 s syncs
        proposal = average_value_replicas(usage, 20_000, current, tolerances(h))
        d = reconcile(h, state, current, proposal, tick * 15.0)
        state, current = d.state, d.desired
        seen.append(current)
    want = min(max(math.ceil(usage / 20_000), 1), 10)
    assert abs(current - want) <= max(1, math.ceil(0.1 * current))  # the tolerance may stop it one short
    moves = [b - a for a, b in itertools.pairwise(seen) if b != a]
    assert all(m > 0 for m in moves) or all(m < 0 for m in moves)  # one direction only: no flapping


def test_from_spec_matches_the_chart_hints() -> None:
    specs = parse_queues(
        {
            "queues": {
                "q": {
                    "functions": ["a.b"],
                    "autoscaling": {
                        "min_replicas": 2,
                        "max_replicas": 7,
                        "metrics": ["backlog", "oldest_waiting"],
                        "target_per_replica": 2.5,
                        "target_oldest_waiting_seconds": 30,
                    },
                }
            }
        }
    )
    h = hpa_mod.from_spec(specs["q"])
    assert (h.min_replicas, h.max_replicas) == (2, 7)
    assert [(m.name, m.target_milli, dict(m.match_labels)) for m in h.metrics] == [
        ("arqscale_queue_backlog", 2500, {"queue": "q"}),
        ("arqscale_queue_oldest_waiting_seconds", 30_000, {"queue": "q"}),
    ]
    assert dataclasses.asdict(h.behavior)["scale_down"]["stabilization_window_seconds"] == 300


def test_quantities_round_up_to_milli() -> None:
    assert hpa_mod.parse_quantity_milli("20") == 20_000
    assert hpa_mod.parse_quantity_milli("1500m") == 1500
    assert hpa_mod.parse_quantity_milli("1k") == 1_000_000
    assert hpa_mod.parse_quantity_milli("1n") == 1  # MilliValue rounds up
    assert hpa_mod.parse_quantity_milli(2.5) == 2500
