"""The exporter's cache of queue counts, and the loop that keeps it fresh.

Every request (Prometheus, the HPA, KEDA) is answered from the last snapshot, so a scrape never
waits on Redis while the snapshot is younger than the refresh interval. A refresh is one round trip
whatever the number of queues or jobs: the arq counting script (``arqscale.core.counts``), the BullMQ one
(``arqscale.core.bullmq_counts``) and an ``HMGET`` of each arq queue's totals, packed into bytes once at
start-up (``counts.PreparedCounts``; on Redis Cluster one call per queue, grouped per shard), plus, when any queue
lists ``wait_target``, a second pipeline with the inputs of the latency target (``wait_target``): three
commands per such queue, in the same refresh and under the same timeout.

A background task refreshes every ``refresh_seconds``; a request that finds the snapshot older than
that (the loop fell behind) joins the refresh in flight instead of starting its own, so Redis sees
one refresh per interval however many clients ask. When a refresh fails the cache says so at once
(``redis_up`` false, the error counted) and the loop keeps trying: recovery needs no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arqscale.core import bullmq_counts, counts, event_stream
from arqscale.core.models import QueueCounts
from arqscale.core.spec import QueueSpec
from arqscale.exporter.wait_target import WaitTargetTracker

log = logging.getLogger("arqscale.exporter")


class RedisUnavailable(RuntimeError):
    """The counts cannot be read: Redis is down or answers with errors."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counts of every configured queue, read in one round trip at ``taken_at`` (unix seconds)."""

    counts: Mapping[str, QueueCounts]
    taken_at: float
    monotonic_at: float
    duration: float
    raw_bullmq: Mapping[str, bullmq_counts.BullmqCounts] = field(default_factory=dict)
    # arq queues' counters (``arqscale:<queue>:totals``, written by the scripts): read, never kept here, so
    # they survive exporter restarts and every replica serves the same numbers.
    totals: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(slots=True)
class Health:
    """What the exporter reports about itself on ``/metrics``."""

    redis_up: bool = False
    refreshes: int = 0
    errors: int = 0
    last_duration: float = 0.0
    last_error: str | None = None
    last_attempt_monotonic: float = 0.0


class SnapshotCache:
    """The latest snapshot plus the refresh loop. Readers call ``get()``; nothing else touches Redis."""

    def __init__(
        self,
        redis: Redis,
        specs: Mapping[str, QueueSpec],
        *,
        refresh_seconds: float = 1.0,
        timeout_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        on_refresh: Callable[[SnapshotCache], Awaitable[None]] | None = None,
    ) -> None:
        self.reader = counts.CountsReader(redis)
        self.specs = dict(specs)
        self._arq_queues = [name for name, spec in self.specs.items() if spec.backend == "arq"]
        # The queues are fixed for the process's life: the refresh's commands are packed once, here (arq's key
        # layout; on Redis Cluster the reader sends one call per queue to its shard).
        self.prepared = None if self.reader.cluster else counts.PreparedCounts(self.specs)
        self.refresh_seconds = refresh_seconds
        # A refresh that hangs (Redis stalled, network partition) must end so the outage shows.
        self.timeout_seconds = timeout_seconds if timeout_seconds is not None else max(2.0, 2 * refresh_seconds)
        self.clock = clock
        self.on_refresh = on_refresh
        self.health = Health()
        # The latency-target signal of the queues that ask for it (wait_target), fed by every refresh.
        self.wait_target = WaitTargetTracker(self.specs)
        self.snapshot: Snapshot | None = None
        self._inflight: asyncio.Task[Snapshot] | None = None
        self._loop_task: asyncio.Task[None] | None = None

    # -- reading ---------------------------------------------------------------------------------

    def fresh(self) -> Snapshot | None:
        """The snapshot if Redis is up and it is no older than the refresh interval, else None."""
        snap = self.snapshot
        if snap is None or not self.health.redis_up:
            return None
        if time.monotonic() - snap.monotonic_at > self.refresh_seconds:
            return None
        return snap

    async def get(self) -> Snapshot:
        """A snapshot no older than the refresh interval; raise ``RedisUnavailable`` while Redis is down."""
        snap = self.fresh()
        if snap is not None:
            return snap
        if not self.health.redis_up and self.health.refreshes + self.health.errors > 0:
            # The loop keeps retrying on its own; a request must not pile more attempts on a dead Redis.
            raise RedisUnavailable(self.health.last_error or "Redis is unavailable")
        return await self.refresh()

    # -- refreshing ------------------------------------------------------------------------------

    def refresh(self) -> asyncio.Future[Snapshot]:
        """Start a refresh, or join the one in flight (single flight: one Redis round trip for all)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._refresh())
        # shield: a client that disconnects mid-request must not cancel the refresh others wait on.
        return asyncio.shield(self._inflight)

    async def _refresh(self) -> Snapshot:
        started = time.monotonic()
        self.health.last_attempt_monotonic = started
        taken_at = self.clock()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                # round(), as arq's timestamp_ms does, so a job arq enqueued this millisecond is not "delayed".
                now_ms = round(taken_at * 1000)
                if self.prepared is not None:
                    values, raw, totals = await self.prepared.read(self.reader.redis, now_ms)
                else:
                    (values, raw), totals = await asyncio.gather(
                        self.reader.read_detailed(self.specs, now_ms),
                        event_stream.read_totals(self.reader.redis, self._arq_queues),
                    )
                # The latency-target signal reads its own inputs (one more round trip, only with wait_target).
                await self.wait_target.update(self.reader.redis, values, started)
        except (RedisError, OSError, TimeoutError) as exc:
            await self._failed(exc, time.monotonic() - started)
            raise RedisUnavailable(self.health.last_error or "Redis is unavailable") from exc
        snap = Snapshot(
            counts=values,
            taken_at=taken_at,
            monotonic_at=started,
            duration=time.monotonic() - started,
            raw_bullmq=raw,
            totals=totals,
        )
        if not self.health.redis_up and self.health.errors:
            log.info("Redis is reachable again; counts are being served")
        self.snapshot = snap
        self.health.redis_up = True
        self.health.refreshes += 1
        self.health.last_error = None
        await self._notify()
        # The duration includes rendering: it is what the loop must start early by to stay fresh.
        self.health.last_duration = time.monotonic() - started
        return snap

    async def _failed(self, exc: BaseException, duration: float) -> None:
        message = f"cannot read queue counts from Redis: {type(exc).__name__}: {exc}".rstrip(": ")
        if self.health.redis_up or self.health.errors == 0:
            log.warning("%s; /metrics reports redis_up 0 and the metrics API answers 503 until it is back", message)
        self.health.redis_up = False
        self.health.errors += 1
        self.health.last_duration = duration
        self.health.last_error = message
        await self._notify()

    async def _notify(self) -> None:
        if self.on_refresh is not None:
            try:
                await self.on_refresh(self)
            except Exception:  # a rendering bug must not stop counting
                log.exception("refresh hook failed")

    async def run(self) -> None:
        """Refresh every ``refresh_seconds`` until cancelled, whatever Redis does."""
        while True:
            started = time.monotonic()
            with contextlib.suppress(RedisUnavailable):
                await self.refresh()
            # Start the next refresh a little early, by about twice the last one's duration, so the new
            # snapshot lands before the old one ages past the interval and no reader has to wait.
            lead = min(2 * self.health.last_duration + 0.005, self.refresh_seconds / 2)
            await asyncio.sleep(max(self.refresh_seconds - lead - (time.monotonic() - started), 0.01))

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self.run(), name="arqscale-exporter-refresh")

    async def stop(self) -> None:
        for task in (self._loop_task, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisUnavailable):
                    await task
        self._loop_task = None

    def loop_alive(self, stale_after: float) -> bool:
        """For /livez: the loop runs and has tried a refresh recently (it is not wedged)."""
        if self._loop_task is None or self._loop_task.done():
            return False
        return time.monotonic() - self.health.last_attempt_monotonic <= stale_after
