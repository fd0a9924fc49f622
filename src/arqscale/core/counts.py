"""Exact BullMQ-style counts for arq queues, read in one Redis round trip.

A queue's sorted set holds waiting jobs (score at most ``band + now``, see ``scores``) and deferred
ones (a later score); ``ZCARD``, all KEDA's Redis scaler can see, mixes the two. Running jobs stay in
the sorted set, parked above every band under their lease expiry (``scores.LEASED``): a live lease is
``active``, an expired one (its worker died or stalled, and no pickup has swept it back yet) is work
waiting to be done and counts as ``waiting``. Leases that workers from before kept in the ``active`` set
count the same way. "Now" is Redis' clock (``lua.NOW_LUA``).

One script reads every configured queue at once: the cost of a refresh is one round trip whatever
the number of jobs, and ``O(queues * levels * log n)`` inside Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from arqscale.core import bullmq_counts, events, scores
from arqscale.core.keys import QueueKeys, is_cluster
from arqscale.core.lua import LEASE_LUA, NOW_LUA, Call, LuaScript, LuaTemplate, PreparedCalls, run_scripts
from arqscale.core.models import QueueCounts
from arqscale.core.spec import QueueSpec

KEYS_PER_QUEUE = 6  # queue, active, paused, completed, dlq_index, group prefix

# ARGV: per queue: completed retention ms, number of bands, band lows...
# Returns per queue: {waiting (ready + stalled), delayed, active, paused_flag, completed, failed,
#                     oldest waiting job's age in ms or -1, held (by their key's limit)}
COUNTS_LUA = (
    (
        NOW_LUA
        + LEASE_LUA
        + """
local out = {}
local argi = 1
local lnow = leased_s(now)
for q = 0, (#KEYS / 6) - 1 do
  local kq, ka, kp, kc, kd = KEYS[q*6+1], KEYS[q*6+2], KEYS[q*6+3], KEYS[q*6+4], KEYS[q*6+5]
  local held = redis.call('HLEN', KEYS[q*6+6] .. 'held')
  local cutoff = now - tonumber(ARGV[argi])
  local nbands = tonumber(ARGV[argi+1])
  argi = argi + 2
  local active = redis.call('ZCOUNT', kq, '(' .. lnow, '+inf') + redis.call('ZCOUNT', ka, '(' .. now, '+inf')
  local stalled = redis.call('ZCOUNT', kq, '@LEASED@', lnow) + redis.call('ZCOUNT', ka, '-inf', now)
  local ready, delayed, oldest = 0, 0, -1
  for b = 1, nbands do
    local low = tonumber(ARGV[argi])
    argi = argi + 1
    local top = low + now
    ready = ready + redis.call('ZCOUNT', kq, low - @HALF@, top)
    delayed = delayed + redis.call('ZCOUNT', kq, '(' .. top, '(' .. (low + @HALF@))
    local first = redis.call('ZRANGEBYSCORE', kq, low - @HALF@, top, 'WITHSCORES', 'LIMIT', 0, 1)
    if #first > 0 then
      local at = tonumber(first[2]) - low
      if oldest < 0 or at < oldest then oldest = at end
    end
  end
  if stalled > 0 then
    local first = redis.call('ZRANGEBYSCORE', kq, '@LEASED@', lnow, 'LIMIT', 0, 1)
    if #first == 0 then first = redis.call('ZRANGEBYSCORE', ka, '-inf', now, 'LIMIT', 0, 1) end
    local score = lease_of(first[1])
    if score then
      local at = tonumber(score) - band_of(tonumber(score))
      if oldest < 0 or at < oldest then oldest = at end
    end
  end
  local age = -1
  if oldest >= 0 then age = math.max(now - oldest, 0) end
  out[#out+1] = {ready + stalled, delayed, active, redis.call('EXISTS', kp), redis.call('ZCOUNT', kc, cutoff, '+inf'),
                 redis.call('ZCARD', kd), age, held}
end
return out
"""
    )
    .replace("@HALF@", str(scores.BAND // 2))
    .replace("@LEASED@", str(scores.LEASED))
)


def queue_keys(spec: QueueSpec, *, cluster: bool = False) -> QueueKeys:
    return QueueKeys.for_queue(spec.name, spec.queue_key, cluster=cluster)


def script_args(specs: Sequence[QueueSpec], *, cluster: bool = False) -> tuple[list[str], list[int]]:
    """KEYS and ARGV of ``COUNTS_LUA`` for these arq queues."""
    keys: list[str] = []
    argv: list[int] = []
    for spec in specs:
        k = queue_keys(spec, cluster=cluster)
        keys += [k.queue, k.active, k.paused, k.completed, k.dlq_index, k.groups]
        argv.append(spec.retention.completed_seconds * 1000)
        lows = [band.low for band in scores.bands(spec)]
        argv.append(len(lows))
        argv += lows
    return keys, argv


def assemble(spec: QueueSpec, raw: Sequence[int]) -> QueueCounts:
    """Turn one queue's script output into counts (pure, unit-tested without Redis)."""
    waiting, delayed, active, paused_flag, completed, failed, age_ms, *rest = map(int, raw)
    is_paused = bool(paused_flag)
    oldest = age_ms / 1000 if age_ms >= 0 and waiting else 0.0
    return QueueCounts(
        queue=spec.name,
        waiting=0 if is_paused else waiting,
        paused=waiting if is_paused else 0,
        active=active,
        delayed=delayed,
        completed=completed,
        failed=failed,
        held=rest[0] if rest else 0,
        oldest_waiting_seconds=oldest,
        is_paused=is_paused,
    )


ARQ_COUNTS = LuaTemplate(COUNTS_LUA)
BULLMQ_COUNTS = LuaScript(bullmq_counts.COUNTS_LUA)
YIELD_EVERY = 50


class CountsReader:
    """Counts of every queue, arq and BullMQ alike, with one pipeline (two scripts, one round trip).

    On Redis Cluster a script may touch one slot only, so each queue is its own script call; redis-py's
    cluster pipeline sends each shard its calls at once, so the counts still take one round trip per
    shard, however many queues (``lua.run_scripts``)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.cluster = is_cluster(redis)

    async def read(self, specs: Mapping[str, QueueSpec], now_ms: int | None = None) -> dict[str, QueueCounts]:
        values, _ = await self.read_detailed(specs, scores.now_ms() if now_ms is None else now_ms)
        return values

    async def read_detailed(
        self, specs: Mapping[str, QueueSpec], now_ms: int
    ) -> tuple[dict[str, QueueCounts], dict[str, bullmq_counts.BullmqCounts]]:
        """The counts in configured order, plus BullMQ's own per-state counts of the BullMQ queues."""
        arq_specs = [s for s in specs.values() if s.backend == "arq"]
        bullmq_specs = [s for s in specs.values() if s.backend == "bullmq"]
        calls: list[Call] = []
        if self.cluster:
            calls += [(ARQ_COUNTS.cluster, *script_args([s], cluster=True)) for s in arq_specs]
            calls += [(BULLMQ_COUNTS, *bullmq_counts.script_args([s])) for s in bullmq_specs]
        else:
            if arq_specs:
                calls.append((ARQ_COUNTS.arq, *script_args(arq_specs)))
            if bullmq_specs:
                calls.append((BULLMQ_COUNTS, *bullmq_counts.script_args(bullmq_specs)))
        replies = await run_scripts(self.redis, calls) if calls else []
        if self.cluster:  # one reply per queue: regroup as the one-call replies
            arq_rows = [row for reply in replies[: len(arq_specs)] for row in reply]
            bullmq_rows = [row for reply in replies[len(arq_specs) :] for row in reply]
        else:
            results = iter(replies)
            arq_rows = next(results) if arq_specs else []
            bullmq_rows = next(results) if bullmq_specs else []
        out: dict[str, QueueCounts] = {}
        raw: dict[str, bullmq_counts.BullmqCounts] = {}
        if arq_specs:
            for i, (spec, row) in enumerate(zip(arq_specs, arq_rows, strict=True)):
                out[spec.name] = assemble(spec, row)
                await _yield_every(i)
        if bullmq_specs:
            for i, (spec, row) in enumerate(zip(bullmq_specs, bullmq_rows, strict=True)):
                raw[spec.name] = bullmq_counts.raw_counts(spec, row)
                out[spec.name] = bullmq_counts.fold(raw[spec.name], now_ms)
                await _yield_every(i)
        return {name: out[name] for name in specs}, raw


class PreparedCounts:
    """The counts and the totals of a fixed set of queues (the exporter's), packed into Redis commands once.

    The same calls as ``CountsReader.read_detailed`` (one counting script per backend, KEYS and ARGV unchanged)
    plus ``HMGET`` of each arq queue's totals hash, sent as bytes built at start-up (``lua.PreparedCalls``):
    one round trip per refresh, and no per-refresh packing of the ~8 arguments per queue. arq's key layout
    only: on Redis Cluster the exporter reads through ``CountsReader`` (one call per queue, per shard).
    """

    def __init__(self, specs: Mapping[str, QueueSpec]) -> None:
        self.specs = dict(specs)
        self.arq_specs = [s for s in self.specs.values() if s.backend == "arq"]
        self.bullmq_specs = [s for s in self.specs.values() if s.backend == "bullmq"]
        calls: list[Call] = []
        if self.arq_specs:
            calls.append((ARQ_COUNTS.arq, *script_args(self.arq_specs)))
        if self.bullmq_specs:
            calls.append((BULLMQ_COUNTS, *bullmq_counts.script_args(self.bullmq_specs)))
        totals = [("HMGET", events.totals_key(s.name), *events.TOTAL_FIELDS) for s in self.arq_specs]
        self.calls = PreparedCalls(calls, totals)

    async def read(
        self, redis: Redis, now_ms: int
    ) -> tuple[dict[str, QueueCounts], dict[str, bullmq_counts.BullmqCounts], dict[str, dict[str, int]]]:
        """Counts in configured order, BullMQ's own counts of the BullMQ queues, and the arq queues' totals."""
        if not self.calls.replies:
            return {}, {}, {}
        replies = await self.calls.run(redis)
        out: dict[str, QueueCounts] = {}
        raw: dict[str, bullmq_counts.BullmqCounts] = {}
        totals: dict[str, dict[str, int]] = {}
        at = 0
        if self.arq_specs:
            rows, at = replies[0], 1
            hashes = replies[len(replies) - len(self.arq_specs) :]
            for i, (spec, row, values) in enumerate(zip(self.arq_specs, rows, hashes, strict=True)):
                out[spec.name] = assemble(spec, row)
                totals[spec.name] = events.parse_totals_fields(values)
                await _yield_every(i)
        if self.bullmq_specs:
            for i, (spec, row) in enumerate(zip(self.bullmq_specs, replies[at], strict=True)):
                raw[spec.name] = bullmq_counts.raw_counts(spec, row)
                out[spec.name] = bullmq_counts.fold(raw[spec.name], now_ms)
                await _yield_every(i)
        return {name: out[name] for name in self.specs}, raw, totals


async def _yield_every(i: int) -> None:
    """Let requests run between chunks of per-queue work: with 1,000 queues, building the counts and the
    exporter's page takes tens of milliseconds of CPU, and a request must not wait behind all of it."""
    if i % YIELD_EVERY == YIELD_EVERY - 1:
        await asyncio.sleep(0)
