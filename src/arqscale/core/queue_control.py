"""Pausing and resuming a queue.

A paused queue keeps accepting jobs; its workers simply take none (the pickup script checks the
``arqscale:<queue>:paused`` key) and its ready jobs count as ``paused`` instead of ``waiting``.
Resuming deletes the key and publishes ``resume`` on the queue's wake channel, so idle workers start
at once instead of at their next fallback poll (a worker that saw the pause holds off ordinary
wake-ups until its next poll; a resume always gets through).

Migrating moves jobs stranded outside the configured priority bands (see ``stranded``).
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys
from arqscale.core.lua import LuaScript, run_scripts
from arqscale.core.scores import BAND, PARKED_FLOOR, bands
from arqscale.core.spec import QueueSpec

RESUME = "resume"  # the wake-up message that gets past a worker's hold (see the worker's wake listener)
# Published on the queue's wake channel after a runtime write that may bring a schedule's tick closer (create, change,
# resume; core.schedules): the queue's workers' schedulers look again at once instead of at their next poll. Here,
# beside RESUME, so the worker's wake listener knows it without importing the schedules module (cold start).
SCHEDULES_WAKE = "schedules"


def queue_keys(spec: QueueSpec, redis: Redis) -> QueueKeys:
    return QueueKeys.of(spec, redis)


async def pause(redis: Redis, spec: QueueSpec) -> bool:
    """Pause the queue. Returns False when it was already paused (the original pause time is kept)."""
    # The value records when the pause began, for people reading Redis by hand.
    created = await redis.set(queue_keys(spec, redis).paused, str(int(time.time() * 1000)), nx=True)
    return bool(created)


async def resume(redis: Redis, spec: QueueSpec) -> bool:
    """Resume the queue and wake its workers. Returns False when it was not paused."""
    k = queue_keys(spec, redis)
    # No MULTI: a cluster client has none, and a resume seen before the key is gone only costs a pickup.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(k.paused)
        pipe.execute_command("PUBLISH", k.wake, RESUME)  # by name: a cluster pipeline refuses pipe.publish()
        deleted, _ = await pipe.execute()
    return bool(deleted)


async def is_paused(redis: Redis, spec: QueueSpec) -> bool:
    return bool(await redis.exists(queue_keys(spec, redis).paused))


# Jobs whose score lies outside every configured priority band (the queue had more levels, or another
# normal level, when they were enqueued): no pickup, count or list sees them. KEYS: queue.
# ARGV: lowest band's low, highest band's low, how many to move (0: only count). Returns {stranded, moved}.
# A moved job keeps its ready time and lands in the nearest configured band.
STRANDED_LUA = LuaScript(
    """
local first, last = tonumber(ARGV[1]), tonumber(ARGV[2])
local floor, ceil = first - @HALF@, last + @HALF@
-- Running jobs are parked above every band (scores.PARK): not stranded.
local stranded = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. floor) + redis.call('ZCOUNT', KEYS[1], ceil, '(@FLOOR@')
local moved = 0
local budget = tonumber(ARGV[3])
local function move(ids, target)
  for i = 1, #ids, 2 do
    local s = tonumber(ids[i + 1])
    local ready = s - math.floor((s + @HALF@) / @BAND@) * @BAND@
    redis.call('ZADD', KEYS[1], string.format('%d', target + ready), ids[i])
    moved = moved + 1
  end
end
if budget > 0 then
  move(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. floor, 'WITHSCORES', 'LIMIT', 0, budget), first)
end
if budget - moved > 0 then
  move(redis.call('ZRANGEBYSCORE', KEYS[1], ceil, '(@FLOOR@', 'WITHSCORES', 'LIMIT', 0, budget - moved), last)
end
return {stranded, moved}
""".replace("@HALF@", str(BAND // 2))
    .replace("@BAND@", str(BAND))
    .replace("@FLOOR@", str(PARKED_FLOOR))
)
MIGRATE_BATCH = 1000


async def stranded(redis: Redis, spec: QueueSpec) -> int:
    """How many jobs sit outside the queue's configured priority bands (changed ``priority_levels`` or
    ``default_priority``): invisible to pickups and counts until ``migrate`` moves them."""
    [(count, _)] = await run_scripts(redis, [(STRANDED_LUA, [queue_keys(spec, redis).queue], [*_band_edges(spec), 0])])
    return int(count)


async def migrate(redis: Redis, spec: QueueSpec) -> int:
    """Move every stranded job into the nearest configured band, keeping its ready time; returns how many."""
    total = 0
    while True:
        [(_, moved)] = await run_scripts(
            redis, [(STRANDED_LUA, [queue_keys(spec, redis).queue], [*_band_edges(spec), MIGRATE_BATCH])]
        )
        total += int(moved)
        if int(moved) < MIGRATE_BATCH:
            return total


def _band_edges(spec: QueueSpec) -> list[int]:
    lows = [band.low for band in bands(spec)]
    return [min(lows), max(lows)]
