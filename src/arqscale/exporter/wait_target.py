"""The latency-target signal: how many workers keep a queue's waiting time under a target.

Per queue that lists ``wait_target`` in ``autoscaling.metrics``, every refresh turns counter deltas into
rates and publishes (docs/autoscaling.md has the derivation and a worked example)::

    busy    = max(arrival_rate * service_time, running now) / concurrency     # Little's law: L = lambda * W
    backlog = waiting * service_time / (target_wait * concurrency)            # drain what waits within the target
    workers = busy + backlog

- ``arrival_rate``: jobs entering the line per second (enqueued + retried + requeued, from the worker
  scripts' totals hash ``arqscale:<queue>:totals``); without that hash, completions plus the growth of
  waiting + running (conservation of jobs).
- ``service_time``: seconds one try runs (the totals' ``run_ms`` over finished tries); without the
  hash, Little's law on the running set: mean running jobs / completions per second.
- Both are exponentially weighted over ``smoothing_seconds``: ratios of decayed sums (jobs arrived /
  seconds observed; running-seconds / tries finished), so irregular refreshes and quiet seconds weigh
  right and there is no warm-up bias towards 0; the arrival rate is the lower of that average and one
  five times faster, so a burst (which the backlog term covers) does not linger in the busy term;
  ``waiting`` and ``running now`` are not smoothed, so a burst shows at once. The published value is
  the highest of the last ``hold_seconds``: it rises at once and falls only after the need stayed lower
  that long, so it does not flap.
- Until a first try has finished the service time is unknown and taken as the target itself (one slot
  per waiting job): pessimistic, for a few seconds after start.

``step`` is pure (state in, state and estimate out); ``WaitTargetTracker`` reads Redis and keeps the state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys
from arqscale.core.models import QueueCounts
from arqscale.core.spec import QueueSpec

METRIC = "arqscale_queue_wait_target_workers"
KEDA_FIELD = "wait_target_workers"
SMOOTHING_SECONDS = 30.0
HOLD_SECONDS = 30.0
FAST_FACTOR = 5.0  # the second, faster arrival average: smoothing_seconds / FAST_FACTOR
# Fields of the worker scripts' per-queue totals hash (arqscale.core.events.TOTAL_FIELDS on issue 12's branch).
TOTALS_FIELDS = ("enqueued", "retried", "requeued", "completed", "failed", "run_ms")


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at a queue: instantaneous counts and monotonic counters (None when not available)."""

    at: float  # seconds; only differences matter
    waiting: int
    active: int
    finished: float  # tries finished so far (completed + failed)
    arrivals: float | None = None  # jobs that entered the line so far
    run_ms: float | None = None  # summed run time of finished tries


@dataclass(frozen=True, slots=True)
class Settings:
    target_wait_seconds: float
    concurrency: int
    smoothing_seconds: float = SMOOTHING_SECONDS
    hold_seconds: float = HOLD_SECONDS


@dataclass(frozen=True, slots=True)
class State:
    """Exponentially decayed sums (each older second weighs ``exp(-1 / smoothing_seconds)`` less): rates are
    ratios of them, so there is no warm-up bias towards 0 and irregular intervals weigh by their length."""

    last: Observation | None = None
    seconds: float = 0.0  # decayed observed time
    arrived: float = 0.0  # decayed jobs that entered the line
    finished: float = 0.0  # decayed finished tries
    ran: float = 0.0  # decayed running-seconds
    # The arrival rate again over a fifth of the smoothing time: the busy term takes the lower of the two.
    seconds_fast: float = 0.0
    arrived_fast: float = 0.0
    recent: tuple[tuple[float, float], ...] = ()  # (at, raw workers) within the hold


@dataclass(frozen=True, slots=True)
class Estimate:
    arrival_rate: float  # jobs/s
    service_seconds: float | None  # None until a try finished
    busy_workers: float
    backlog_workers: float
    raw_workers: float
    workers: float  # the published value: the highest raw value of the hold


def workers_needed(
    arrival_rate: float, service_seconds: float | None, waiting: int, active: int, s: Settings
) -> tuple[float, float]:
    """(busy, backlog) workers: Little's law for the steady flow, plus draining the line within the target."""
    c = s.concurrency
    service = s.target_wait_seconds if service_seconds is None else service_seconds
    busy = max(arrival_rate * service, float(active)) / c
    backlog = waiting * service / (s.target_wait_seconds * c)
    return busy, backlog


def step(state: State, obs: Observation, s: Settings) -> tuple[State, Estimate]:
    """Fold one observation into the smoothed rates and return the estimate (pure)."""
    seconds, arrived_sum, finished_sum, ran_sum = state.seconds, state.arrived, state.finished, state.ran
    seconds_fast, arrived_fast = state.seconds_fast, state.arrived_fast
    last = state.last
    if last is not None and obs.at > last.at:
        dt = obs.at - last.at
        decay = math.exp(-dt / s.smoothing_seconds)
        finished = max(obs.finished - last.finished, 0.0)  # a counter reset reads as no progress
        if obs.arrivals is not None and last.arrivals is not None:
            arrived = max(obs.arrivals - last.arrivals, 0.0)
        else:  # conservation: what arrived = what finished + the growth of the line and of the running set
            grown = (obs.waiting + obs.active) - (last.waiting + last.active)
            arrived = max(finished + grown, 0.0)
        if obs.run_ms is not None and last.run_ms is not None:
            ran = max(obs.run_ms - last.run_ms, 0.0) / 1000
        else:  # Little's law: the running-seconds of the interval are the area under the running count
            ran = (obs.active + last.active) / 2 * dt
        seconds = seconds * decay + dt
        arrived_sum = arrived_sum * decay + arrived
        finished_sum = finished_sum * decay + finished
        ran_sum = ran_sum * decay + ran
        decay_fast = math.exp(-dt * FAST_FACTOR / s.smoothing_seconds)
        seconds_fast = seconds_fast * decay_fast + dt
        arrived_fast = arrived_fast * decay_fast + arrived
    elif last is not None:
        obs = replace(obs, at=last.at)  # a clock that did not move: keep the old timestamp
    # A burst is an arrival too: it would keep the smoothed rate (and the busy term) high for the whole
    # smoothing time after the backlog term already drained it. The faster average forgets it in a fifth
    # of that; the slower one keeps a genuine rise from showing before it lasts. The lower of the two
    # sizes the steady flow, and what it misses waits in line, where the backlog term sees it at once.
    rate = min(arrived_sum / seconds, arrived_fast / seconds_fast) if seconds > 0 else 0.0
    service = ran_sum / finished_sum if finished_sum > 1e-9 else None
    busy, backlog = workers_needed(rate, service, obs.waiting, obs.active, s)
    raw = busy + backlog
    recent = (*(r for r in state.recent if r[0] > obs.at - s.hold_seconds), (obs.at, raw))
    published = max(r[1] for r in recent)
    new = State(obs, seconds, arrived_sum, finished_sum, ran_sum, seconds_fast, arrived_fast, recent)
    return new, Estimate(rate, service, busy, backlog, raw, round(published, 3))


class WaitTargetTracker:
    """Reads the inputs of every tracked queue in one pipeline per refresh and keeps their state."""

    def __init__(
        self,
        specs: Mapping[str, QueueSpec],
        *,
        smoothing_seconds: float = SMOOTHING_SECONDS,
        hold_seconds: float = HOLD_SECONDS,
    ) -> None:
        self.specs = {
            name: spec
            for name, spec in specs.items()
            if spec.backend == "arq" and "wait_target" in spec.autoscaling.metrics
        }
        self.settings = {
            name: Settings(spec.autoscaling.target_wait_seconds, spec.concurrency, smoothing_seconds, hold_seconds)
            for name, spec in self.specs.items()
        }
        self.states: dict[str, State] = {name: State() for name in self.specs}
        self.estimates: dict[str, Estimate] = {}
        # Without the totals hash: completions counted from the `completed` index past the newest score seen.
        self._completed_seen: dict[str, tuple[float, float]] = {}  # queue -> (newest score, running total)

    def tracks(self, queue: str) -> bool:
        return queue in self.specs

    async def update(self, redis: Redis, counts: Mapping[str, QueueCounts], at: float) -> None:
        if not self.specs:
            return
        names = [n for n in self.specs if n in counts]
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                keys = QueueKeys.of(self.specs[name], redis)
                pipe.hmget(keys.totals, list(TOTALS_FIELDS))
                newest, _ = self._completed_seen.get(name, (math.inf, 0.0))
                pipe.zcount(keys.completed, f"({newest}" if math.isfinite(newest) else "+inf", "+inf")
                pipe.zrevrange(keys.completed, 0, 0, withscores=True)
            replies = await pipe.execute()
        for i, name in enumerate(names):
            totals, new_completions, top = replies[3 * i : 3 * i + 3]
            obs = self._observation(name, counts[name], at, totals, int(new_completions), top)
            self.states[name], self.estimates[name] = step(self.states[name], obs, self.settings[name])

    def _observation(
        self, name: str, c: QueueCounts, at: float, totals: list[bytes | None], new: int, top: list[tuple[bytes, float]]
    ) -> Observation:
        newest, completed = self._completed_seen.get(name, (math.inf, 0.0))
        if math.isfinite(newest):
            completed += new
        self._completed_seen[name] = (
            float(top[0][1]) if top else (newest if math.isfinite(newest) else 0.0),
            completed,
        )
        if any(v is not None for v in totals):
            enq, retried, requeued, done, failed, run_ms = (float(v or 0) for v in totals)
            return Observation(at, c.waiting, c.active, done + failed, enq + retried + requeued, run_ms)
        return Observation(at, c.waiting, c.active, completed)
