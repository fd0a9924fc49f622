"""The HorizontalPodAutoscaler controller's arithmetic, as pure functions of (HPA, state, now, inputs).

Followed line by line from kubernetes/kubernetes ``pkg/controller/podautoscaler`` (v1.33+):

- ``replica_calculator.go``: ``GetExternalPerPodMetricReplicas`` (AverageValue targets:
  ``ceil(sum / target)`` unless ``sum / (target * status.replicas)`` is within the tolerance),
  ``GetExternalMetricReplicas`` + ``getUsageRatioReplicaCount`` (Value targets: ``ceil(ratio * ready
  pods)`` unless the ratio is within the tolerance), ``Tolerances.isWithin`` (10 %, the
  ``--horizontal-pod-autoscaler-tolerance`` default, or the HPA's per-direction ``tolerance``).
- ``horizontal.go``: ``computeReplicasForMetrics`` (the largest proposal; no scaling when every metric
  failed, or when one failed and the rest would scale down), ``reconcileAutoscaler`` (0 replicas with
  min > 0 disables scaling; outside [min, max] goes straight to the bound), ``stabilizeRecommendationWithBehaviors``
  (the up window takes the lowest recent recommendation, the down window the highest),
  ``convertDesiredReplicasWithBehaviorRate`` with ``calculateScaleUpLimitWithScalingRules`` /
  ``calculateScaleDownLimitWithBehaviors`` and ``getReplicasChangePerPeriod`` (policies count the
  replicas added and removed within each ``periodSeconds``; ``selectPolicy`` Max/Min/Disabled), and
  ``storeScaleEvent`` / ``markScaleEventsOutdated`` (events older than the longest period are reused).

Times are seconds on any monotonic clock; the caller passes ``now``. Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from arqscale.autoscaler.hpa import Hpa, ScalingRules

INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Recommendation:
    replicas: int
    at: float


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    change: int  # replicas added (up events) or removed (down events), always > 0
    at: float
    outdated: bool = False


@dataclass(frozen=True, slots=True)
class ControllerState:
    """What the controller keeps per HPA between syncs (its ``recommendations`` and scale-event maps)."""

    recommendations: tuple[Recommendation, ...] = ()
    up_events: tuple[ScaleEvent, ...] = ()
    down_events: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    state: ControllerState
    reason: str


def within_tolerance(ratio: float, down: float, up: float) -> bool:
    """``Tolerances.isWithin``: NaN (0/0) is never within, as in Go."""
    return (1.0 - down) <= ratio <= (1.0 + up)


def tolerances(hpa: Hpa) -> tuple[float, float]:
    """(scale-down, scale-up) tolerance: the HPA's own per direction, else the controller's flag."""
    down = hpa.behavior.scale_down.tolerance
    up = hpa.behavior.scale_up.tolerance
    return (hpa.tolerance if down is None else down, hpa.tolerance if up is None else up)


def _ratio(numerator: float, denominator: float) -> float:
    # Go's float division: x/0 is +Inf for x > 0 and NaN for 0/0.
    if denominator == 0:
        return math.nan if numerator == 0 else math.inf
    return numerator / denominator


def _clamp_int32(value: float) -> int:
    return INT32_MAX if value > INT32_MAX else int(value)


def average_value_replicas(usage_milli: int, target_milli: int, status_replicas: int, tol: tuple[float, float]) -> int:
    """``GetExternalPerPodMetricReplicas``: an External metric with an ``AverageValue`` target."""
    replicas = status_replicas
    ratio = _ratio(float(usage_milli), float(target_milli) * status_replicas)
    if not within_tolerance(ratio, *tol):
        replicas = _clamp_int32(math.ceil(usage_milli / target_milli))
    return replicas


def value_replicas(
    usage_milli: int, target_milli: int, spec_replicas: int, ready_replicas: int, tol: tuple[float, float]
) -> int:
    """``GetExternalMetricReplicas`` + ``getUsageRatioReplicaCount``: an External metric with a ``Value`` target."""
    ratio = usage_milli / target_milli
    if spec_replicas == 0:
        return _clamp_int32(math.ceil(ratio))  # scale from zero: ready pods are not looked at
    if within_tolerance(ratio, *tol):
        return spec_replicas
    return _clamp_int32(math.ceil(ratio * ready_replicas))


def combine(proposals: Sequence[int | None], spec_replicas: int) -> int | None:
    """``computeReplicasForMetrics``: the largest proposal, or None (no scaling) when every metric failed
    or some failed and the others would scale down (a missing metric must not shrink the target)."""
    valid = [p for p in proposals if p is not None]
    replicas = max(valid, default=0)
    invalid = len(proposals) - len(valid)
    if invalid >= len(proposals) or (invalid > 0 and replicas < spec_replicas):
        return None
    return replicas


def _changes_in_period(period_seconds: int, events: Sequence[ScaleEvent], now: float) -> int:
    """``getReplicasChangePerPeriod``: outdated marks do not matter here, only the timestamps."""
    cutoff = now - period_seconds
    return sum(e.change for e in events if e.at > cutoff)


def scale_up_limit(
    current: int, up: Sequence[ScaleEvent], down: Sequence[ScaleEvent], rules: ScalingRules, now: float
) -> int:
    """``calculateScaleUpLimitWithScalingRules``."""
    if rules.select_policy == "Disabled":
        return current
    pick = min if rules.select_policy == "Min" else max
    result: int | None = None
    for policy in rules.policies:
        start = (
            current
            - _changes_in_period(policy.period_seconds, up, now)
            + _changes_in_period(policy.period_seconds, down, now)
        )
        # Percent is rounded up, or a small Deployment would never grow.
        proposed = start + policy.value if policy.type == "Pods" else math.ceil(start * (1 + policy.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def scale_down_limit(
    current: int, up: Sequence[ScaleEvent], down: Sequence[ScaleEvent], rules: ScalingRules, now: float
) -> int:
    """``calculateScaleDownLimitWithBehaviors``."""
    if rules.select_policy == "Disabled":
        return current
    # For scaling down the smallest change is the largest count: Min picks max, Max picks min.
    pick = max if rules.select_policy == "Min" else min
    result: int | None = None
    for policy in rules.policies:
        start = (
            current
            - _changes_in_period(policy.period_seconds, up, now)
            + _changes_in_period(policy.period_seconds, down, now)
        )
        # Percent: Go's int32() truncates toward zero.
        proposed = start - policy.value if policy.type == "Pods" else int(start * (1 - policy.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def stabilize(
    hpa: Hpa, recommendations: tuple[Recommendation, ...], current: int, desired: int, now: float
) -> tuple[int, tuple[Recommendation, ...]]:
    """``stabilizeRecommendationWithBehaviors``: clamp between the lowest recommendation of the up window
    and the highest of the down window, then record the unstabilized one (reusing an expired slot)."""
    up_cutoff = now - hpa.behavior.scale_up.stabilization_window_seconds
    down_cutoff = now - hpa.behavior.scale_down.stabilization_window_seconds
    up_rec = down_rec = desired
    old_index: int | None = None
    for i, rec in enumerate(recommendations):
        if rec.at > up_cutoff:
            up_rec = min(rec.replicas, up_rec)
        if rec.at > down_cutoff:
            down_rec = max(rec.replicas, down_rec)
        if rec.at < up_cutoff and rec.at < down_cutoff:
            old_index = i
    recommendation = current
    if recommendation < up_rec:
        recommendation = up_rec
    if recommendation > down_rec:
        recommendation = down_rec
    new = Recommendation(desired, now)
    if old_index is not None:
        recs = (*recommendations[:old_index], new, *recommendations[old_index + 1 :])
    else:
        recs = (*recommendations, new)
    return recommendation, recs


def apply_rate(hpa: Hpa, state: ControllerState, current: int, desired: int, now: float) -> tuple[int, str]:
    """``convertDesiredReplicasWithBehaviorRate``: the policies' limits, then min/max."""
    b = hpa.behavior
    if desired > current:
        limit = max(scale_up_limit(current, state.up_events, state.down_events, b.scale_up, now), current)
        if hpa.max_replicas > limit:
            allowed, reason = limit, "ScaleUpLimit"
        else:
            allowed, reason = hpa.max_replicas, "TooManyReplicas"
        if desired > allowed:
            return allowed, reason
    elif desired < current:
        limit = min(scale_down_limit(current, state.up_events, state.down_events, b.scale_down, now), current)
        if hpa.min_replicas < limit:
            allowed, reason = limit, "ScaleDownLimit"
        else:
            allowed, reason = hpa.min_replicas, "TooFewReplicas"
        if desired < allowed:
            return allowed, reason
    return desired, "DesiredWithinRange"


def _store(events: tuple[ScaleEvent, ...], longest: int, change: int, now: float) -> tuple[ScaleEvent, ...]:
    """``storeScaleEvent`` for one direction: mark events older than the longest period outdated, then put
    the new event in the last outdated slot, or append it."""
    cutoff = now - longest
    marked = tuple(replace(e, outdated=True) if e.at < cutoff else e for e in events)
    slot = max((i for i, e in enumerate(marked) if e.outdated), default=None)
    new = ScaleEvent(change, now)
    if slot is None:
        return (*marked, new)
    return (*marked[:slot], new, *marked[slot + 1 :])


def store_scale_event(hpa: Hpa, state: ControllerState, previous: int, new: int, now: float) -> ControllerState:
    if new > previous:
        ups = _store(state.up_events, hpa.behavior.scale_up.longest_period, new - previous, now)
        return replace(state, up_events=ups)
    downs = _store(state.down_events, hpa.behavior.scale_down.longest_period, previous - new, now)
    return replace(state, down_events=downs)


def reconcile(hpa: Hpa, state: ControllerState, current: int, proposal: int | None, now: float) -> Decision:
    """One sync of ``reconcileAutoscaler``: ``current`` is the target's spec replicas, ``proposal`` what
    ``combine`` made of the metrics (None: the metrics failed, so nothing changes)."""
    if not state.recommendations:  # recordInitialRecommendation
        state = replace(state, recommendations=(Recommendation(current, now),))
    if current == 0 and hpa.min_replicas != 0:
        return Decision(0, state, "ScalingDisabled")
    if current > hpa.max_replicas:
        desired, reason = hpa.max_replicas, "above maxReplicas"
    elif current < hpa.min_replicas:
        desired, reason = hpa.min_replicas, "below minReplicas"
    else:
        if proposal is None:
            return Decision(current, state, "FailedComputeMetricsReplicas")
        stabilized, recs = stabilize(hpa, state.recommendations, current, proposal, now)
        state = replace(state, recommendations=recs)
        desired, reason = apply_rate(hpa, state, current, stabilized, now)
        if stabilized != proposal and desired == stabilized:
            reason = "ScaleUpStabilized" if proposal >= current else "ScaleDownStabilized"
    if desired != current:
        state = store_scale_event(hpa, state, current, desired, now)
    return Decision(desired, state, reason)
