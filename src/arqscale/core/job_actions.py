"""Two of the dashboard's job actions that no other path does: promote a delayed job, clean completed ones.

**Promote** moves a deferred job (``defer_by``, ``defer_until``, or a retry waiting for its backoff) to
ready now, keeping its priority band, so it runs next in its level as if it had been enqueued now; it
writes a ``waiting`` event (``reason`` ``promoted``) and wakes the queue's workers. A job that is ready,
running, held or unknown is left alone.

**Clean completed** deletes the results (and log lines) of jobs of a queue that completed more than an age
ago, oldest first and at most ``MAX_CLEAN`` per call, so one call never blocks Redis for long; the
caller repeats while ``more`` is true. Failed jobs live in the dead-letter store, cleaned by its purge.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from arqscale.core.events import EVENTS_LUA
from arqscale.core.keys import QueueKeys
from arqscale.core.lua import NOW_LUA, LuaScript, run_scripts
from arqscale.core.scores import BAND, PARKED_FLOOR
from arqscale.core.spec import QueueSpec

MAX_CLEAN: Final = 1000


class PromoteOutcome(enum.StrEnum):
    PROMOTED = "promoted"
    NOT_DELAYED = "not_delayed"  # ready already, or running
    NOT_FOUND = "not_found"  # not in the queue (finished, dead, held by its key's limit, unknown)


# KEYS: queue, events stream, totals. ARGV: job id, wake channel, events max len.
# Returns 1 promoted, 2 not delayed, 0 not in the queue.
PROMOTE_LUA = LuaScript(
    NOW_LUA
    + EVENTS_LUA
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
score = tonumber(score)
if score >= @FLOOR@ then return 2 end
local band = math.floor((score + @HALF@) / @BAND@) * @BAND@
if score - band <= now then return 2 end
redis.call('ZADD', KEYS[1], 'XX', band + now, ARGV[1])
events_to(KEYS[2], KEYS[3], ARGV[3])
emit('waiting', ARGV[1], 'reason', 'promoted')
redis.call('PUBLISH', ARGV[2], 'promoted')
return 1
""".replace("@FLOOR@", str(PARKED_FLOOR))
    .replace("@HALF@", str(BAND // 2))
    .replace("@BAND@", str(BAND))
)

_PROMOTE_CODES = {1: PromoteOutcome.PROMOTED, 2: PromoteOutcome.NOT_DELAYED, 0: PromoteOutcome.NOT_FOUND}


async def promote(redis: Redis, spec: QueueSpec, job_id: str) -> PromoteOutcome:
    k = QueueKeys.of(spec, redis)
    [code] = await run_scripts(
        redis, [(PROMOTE_LUA, [k.queue, k.events, k.totals], [job_id, k.wake, spec.events.stream_max])]
    )
    return _PROMOTE_CODES[int(code)]


# KEYS: the completed index. ARGV: finished before (ms, exclusive), limit, result prefix, logs prefix.
# Returns {deleted, more}: the index entries removed (with their results and logs), and whether older
# ones remain. Only the index's own ids are touched: a result whose job ran again is gone from it.
CLEAN_COMPLETED_LUA = LuaScript(
    """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[3] .. id, ARGV[4] .. id)
  redis.call('ZREM', KEYS[1], id)
end
local more = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1]) > 0 and 1 or 0
return {#ids, more}
"""
)


@dataclass(frozen=True)
class Cleaned:
    deleted: int
    more: bool


async def clean_completed(redis: Redis, spec: QueueSpec, before_ms: int, limit: int = MAX_CLEAN) -> Cleaned:
    """Delete up to ``limit`` completed jobs' results that finished at or before ``before_ms``, oldest first
    (at: "older than 0 s" takes a job that ended in this millisecond)."""
    k = QueueKeys.of(spec, redis)
    args = [before_ms, min(limit, MAX_CLEAN), k.result(""), k.logs("")]
    [(deleted, more)] = await run_scripts(redis, [(CLEAN_COMPLETED_LUA, [k.completed], args)])
    return Cleaned(deleted=int(deleted), more=bool(more))
