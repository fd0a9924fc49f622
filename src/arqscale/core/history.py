"""An hour of per-queue samples for the dashboard's charts, kept in Redis by arqscale itself (no Prometheus).

One sample per queue per ``STEP_SECONDS`` window, in the sorted set ``arqscale:<queue>:history``: score =
the window number (unix seconds // STEP_SECONDS), member = a small JSON object. The sample holds the
gauges of that moment (waiting, active, delayed, held, oldest waiting age, live workers) and the queue's
cumulative ``totals`` counters (completed, failed, dead); rates per second are the deltas between two
samples divided by the time between them, computed when read, so a missed window costs one point, not a
wrong rate.

Several samplers (API replicas) may run: ``RECORD_LUA`` adds a sample only when its window has none yet,
so the set holds one sample per window whoever wrote it. The same call trims windows older than
``KEEP_SECONDS`` and sets an expiry, so a queue removed from the config leaves nothing behind.

Redis cost: one EVAL (a 300-byte script) per queue per window, pipelined (0.1 command/s per queue) from
each sampler, and about 360 members of ~150 bytes per queue (measured in docs/dashboard.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys, is_cluster
from arqscale.core.models import QueueCounts

STEP_SECONDS: Final = 10
KEEP_SECONDS: Final = 3600
GAUGES: Final = ("waiting", "active", "delayed", "held")
COUNTERS: Final = ("completed", "failed", "dead")

# KEYS[1] history set; ARGV: window, member, oldest window to keep, expiry (s).
RECORD_LUA: Final = """
local window = tonumber(ARGV[1])
if redis.call('zcount', KEYS[1], window, window) > 0 then return 0 end
redis.call('zadd', KEYS[1], window, ARGV[2])
redis.call('zremrangebyscore', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('expire', KEYS[1], tonumber(ARGV[4]))
return 1
"""


def history_key(queue: str, *, cluster: bool = False) -> str:
    return QueueKeys.for_queue(queue, "", cluster=cluster).history


class Sample(BaseModel):
    """One point of a queue's charts."""

    at: float = Field(description="unix seconds when the sample was taken")
    waiting: int
    active: int
    delayed: int
    held: int = 0
    oldest_waiting_seconds: float
    workers: int = Field(description="worker processes with a live heartbeat")
    completed_per_second: float | None = Field(description="jobs completed per second since the previous sample")
    failed_per_second: float | None = Field(description="tries failed per second since the previous sample")


class History(BaseModel):
    queue: str
    step_seconds: int = STEP_SECONDS
    samples: list[Sample]


def _member(counts: QueueCounts, workers: int, totals: Mapping[str, int], at: float) -> str:
    body: dict[str, Any] = {g: getattr(counts, g) for g in GAUGES}
    body.update(at=round(at, 3), oldest=round(counts.oldest_waiting_seconds, 3), workers=workers)
    body.update({c: int(totals.get(c, 0)) for c in COUNTERS})
    return json.dumps(body, separators=(",", ":"))


async def record(
    redis: Redis,
    counts: Mapping[str, QueueCounts],
    workers: Mapping[str, int],
    totals: Mapping[str, Mapping[str, int]],
    now: float | None = None,
) -> int:
    """Add this window's sample of every queue in ``counts`` (one pipelined round trip); how many were new."""
    at = time.time() if now is None else now
    window = int(at // STEP_SECONDS)
    keep_from = window - KEEP_SECONDS // STEP_SECONDS - 1  # one more, so the hour's first point has a rate
    cluster = is_cluster(redis)
    async with redis.pipeline(transaction=False) as pipe:
        for queue, c in counts.items():
            member = _member(c, workers.get(queue, 0), totals.get(queue, {}), at)
            key = history_key(queue, cluster=cluster)
            pipe.eval(RECORD_LUA, 1, key, str(window), member, str(keep_from), str(KEEP_SECONDS * 2))
        added = await pipe.execute()
    return sum(int(a) for a in added)


def _rate(now: Mapping[str, Any], before: Mapping[str, Any] | None, field: str) -> float | None:
    if before is None:
        return None
    dt = float(now["at"]) - float(before["at"])
    delta = int(now.get(field, 0)) - int(before.get(field, 0))
    if dt <= 0 or delta < 0:  # counters reset (totals deleted): no rate rather than a negative one
        return None
    return round(delta / dt, 3)


def samples(raw: Sequence[bytes | str]) -> list[Sample]:
    """Parsed samples, oldest first, with rates from consecutive counters; unreadable members skipped."""
    out: list[Sample] = []
    before: dict[str, Any] | None = None
    for member in raw:
        try:
            point = json.loads(member)
            float(point["at"])
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(point, dict):
            continue
        failed = _rate(point, before, "failed")
        out.append(
            Sample(
                at=float(point["at"]),
                waiting=int(point.get("waiting", 0)),
                active=int(point.get("active", 0)),
                delayed=int(point.get("delayed", 0)),
                held=int(point.get("held", 0)),
                oldest_waiting_seconds=float(point.get("oldest", 0.0)),
                workers=int(point.get("workers", 0)),
                completed_per_second=_rate(point, before, "completed"),
                failed_per_second=failed,
            )
        )
        before = point
    return out


async def read(redis: Redis, queue: str, since_seconds: float = KEEP_SECONDS, now: float | None = None) -> History:
    """The queue's samples of the last ``since_seconds``, oldest first, in one command."""
    at = time.time() if now is None else now
    # One window earlier than asked, so the first point shown has a rate.
    first = int((at - since_seconds) // STEP_SECONDS) - 1
    raw = await redis.zrangebyscore(history_key(queue, cluster=is_cluster(redis)), first, "+inf")
    start = at - since_seconds
    return History(queue=queue, samples=[s for s in samples(raw) if s.at >= start])
