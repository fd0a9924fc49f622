"""Exact BullMQ-style counts for arq queues, read in one Redis round trip.

arq keeps a running job inside its queue's sorted set until it finishes, and a deferred job there
with a future score, so ``ZCARD`` (all KEDA's Redis scaler can see) mixes waiting, running and
deferred work. Per priority band (see ``scores``) a job is *ready* when its score is at most
``band + now``; ready jobs whose lease in the ``active`` set is alive are running, the rest wait.

One script reads every configured queue at once: the cost of a refresh is one round trip whatever
the number of jobs, and ``O(queues * levels * log n)`` inside Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from arqscale.core import bullmq_counts, scores
from arqscale.core.keys import QueueKeys
from arqscale.core.lua import Call, LuaScript, run_scripts
from arqscale.core.models import QueueCounts
from arqscale.core.spec import QueueSpec

KEYS_PER_QUEUE = 5  # queue, active, paused, completed, dlq_index

# ARGV[1] = now ms; then per queue: completed cutoff ms, number of bands, band lows...
# Returns per queue: {ready, delayed, active, paused_flag, completed, failed, oldest_ready_ms or -1}
COUNTS_LUA = """
local now = tonumber(ARGV[1])
local out = {}
local argi = 2
for q = 0, (#KEYS / 5) - 1 do
  local kq, ka, kp, kc, kd = KEYS[q*5+1], KEYS[q*5+2], KEYS[q*5+3], KEYS[q*5+4], KEYS[q*5+5]
  local cutoff = ARGV[argi]
  local nbands = tonumber(ARGV[argi+1])
  argi = argi + 2
  local active = redis.call('ZCOUNT', ka, '(' .. now, '+inf')
  local ready, delayed, oldest = 0, 0, -1
  for b = 1, nbands do
    local low = tonumber(ARGV[argi])
    argi = argi + 1
    local top = low + now
    ready = ready + redis.call('ZCOUNT', kq, low, top)
    delayed = delayed + redis.call('ZCOUNT', kq, '(' .. top, '(' .. (low + 10000000000000))
    -- The oldest waiting job of this band: skip ready jobs that are running (their lease is alive).
    -- Read in growing pages (8, 16, 32...): usually the first job is not running, and reading
    -- active + 1 jobs at once cost ~0.2 ms per band with hundreds of jobs running (exporter benchmark).
    local offset, page, found = 0, 8, false
    while not found and offset <= active do
      local ids = redis.call('ZRANGEBYSCORE', kq, low, top, 'WITHSCORES', 'LIMIT', offset, page)
      for i = 1, #ids, 2 do
        local lease = redis.call('ZSCORE', ka, ids[i])
        if not lease or tonumber(lease) <= now then
          local at = tonumber(ids[i+1]) - low
          if oldest < 0 or at < oldest then oldest = at end
          found = true
          break
        end
      end
      if #ids < 2 * page then break end
      offset = offset + page
      page = page * 2
    end
  end
  out[#out+1] = {ready, delayed, active, redis.call('EXISTS', kp), redis.call('ZCOUNT', kc, cutoff, '+inf'),
                 redis.call('ZCARD', kd), oldest}
end
return out
"""


def queue_keys(spec: QueueSpec) -> QueueKeys:
    return QueueKeys.for_queue(spec.name, spec.queue_key)


def script_args(specs: Sequence[QueueSpec], now_ms: int) -> tuple[list[str], list[int]]:
    """KEYS and ARGV of ``COUNTS_LUA`` for these arq queues."""
    keys: list[str] = []
    argv: list[int] = [now_ms]
    for spec in specs:
        k = queue_keys(spec)
        keys += [k.queue, k.active, k.paused, k.completed, k.dlq_index]
        argv.append(now_ms - spec.retention.completed_seconds * 1000)
        lows = [band.low for band in scores.bands(spec)]
        argv.append(len(lows))
        argv += lows
    return keys, argv


def assemble(spec: QueueSpec, raw: Sequence[int], now_ms: int) -> QueueCounts:
    """Turn one queue's script output into counts (pure, unit-tested without Redis)."""
    ready, delayed, active, paused_flag, completed, failed, oldest_ms = (int(x) for x in raw)
    # A running job stays in the queue's sorted set, so it is among the ready ones; never go negative
    # if a job finished between the two reads of one script (it cannot, but stay honest anyway).
    waiting = max(ready - active, 0)
    is_paused = bool(paused_flag)
    oldest = max(now_ms - oldest_ms, 0) / 1000 if oldest_ms >= 0 and waiting else 0.0
    return QueueCounts(
        queue=spec.name,
        waiting=0 if is_paused else waiting,
        paused=waiting if is_paused else 0,
        active=active,
        delayed=delayed,
        completed=completed,
        failed=failed,
        oldest_waiting_seconds=oldest,
        is_paused=is_paused,
    )


ARQ_COUNTS = LuaScript(COUNTS_LUA)
BULLMQ_COUNTS = LuaScript(bullmq_counts.COUNTS_LUA)
YIELD_EVERY = 50


class CountsReader:
    """Counts of every queue, arq and BullMQ alike, with one pipeline (two scripts, one round trip)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

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
        if arq_specs:
            calls.append((ARQ_COUNTS, *script_args(arq_specs, now_ms)))
        if bullmq_specs:
            calls.append((BULLMQ_COUNTS, *bullmq_counts.script_args(bullmq_specs)))
        results = iter(await run_scripts(self.redis, calls) if calls else [])
        out: dict[str, QueueCounts] = {}
        raw: dict[str, bullmq_counts.BullmqCounts] = {}
        if arq_specs:
            for i, (spec, row) in enumerate(zip(arq_specs, next(results), strict=True)):
                out[spec.name] = assemble(spec, row, now_ms)
                await _yield_every(i)
        if bullmq_specs:
            for i, (spec, row) in enumerate(zip(bullmq_specs, next(results), strict=True)):
                raw[spec.name] = bullmq_counts.raw_counts(spec, row)
                out[spec.name] = bullmq_counts.fold(raw[spec.name], now_ms)
                await _yield_every(i)
        return {name: out[name] for name in specs}, raw


async def _yield_every(i: int) -> None:
    """Let requests run between chunks of per-queue work: with 1,000 queues, building the counts and the
    exporter's page takes tens of milliseconds of CPU, and a request must not wait behind all of it."""
    if i % YIELD_EVERY == YIELD_EVERY - 1:
        await asyncio.sleep(0)
