"""Cancelling jobs: a waiting or delayed job never runs; a running one is stopped by its worker.

One request, whoever sends it (our API, CLI and ``Producer.cancel``, or a plain arq client's
``Job.abort()``): the job's id in arq's own abort set (``arq:abort``, id -> request ms). A job still in
its queue is cancelled on the spot by ``CANCEL_LUA``; a running one is cancelled by the worker that holds
it, which watches the set (docs/design.md, "Cancellation"). Either way the job ends ``cancelled``: arq's
result with ``s`` false, ``x: "cancelled"`` (an extra field arq ignores) and, for ``r``, arq's
``asyncio.CancelledError`` on pickle queues (what arq's ``Job.abort()`` waits for) or the reason text on
JSON queues (``serializers.json_loads`` turns it back into ``CancelledError`` for plain arq clients that
use it as their deserializer). Never retried.

Races settle in Redis: a cancel that meets a completion loses (the job completed); one that meets a retry,
a put-back or a sweep wins at the next pickup, which takes the job only to cancel it.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Any

from arq.constants import abort_jobs_ss
from redis.asyncio import Redis

from arqscale.core import keys, serializers
from arqscale.core.events import EVENTS_LUA
from arqscale.core.lua import NOW_LUA, LuaScript, run_scripts
from arqscale.core.pickle_peek import PeekError, looks_pickled, peek
from arqscale.core.scores import PARKED_FLOOR, time_ms
from arqscale.core.spec import QueueSpec

ABORT_KEY = abort_jobs_ss
CANCELLED_MARK = "cancelled"  # the result's ``x`` field
# A request nobody acted on (a plain arq abort of an id that never ran here) is dropped after this long.
ABORT_MAX_AGE_MS = 3_600_000


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it was waiting or delayed: it will never run
    CANCELLING = "cancelling"  # it is running: its worker stops it within a second
    FINISHED = "finished"  # too late: it already completed, failed or died
    NOT_FOUND = "not_found"


# KEYS: queue, job, result, retry, error, in-progress, abort set, dead-letter hash, the queue's group prefix,
#       the job's group key, events stream, totals hash, the job's log (lines of earlier tries: the result's TTL).
# ARGV: job id, cancelled result ('' = keep none), result ttl ms, wake channel, events max len, reason.
# A waiting job's `cancelled` event is written here; a running one's by its worker's outcome.
# Returns 1 cancelled, 2 cancelling (running: the worker acts), 3 finished, 0 not found.
CANCEL_LUA = LuaScript(
    NOW_LUA
    + EVENTS_LUA
    + """
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('HEXISTS', KEYS[8], ARGV[1]) == 1 then return 3 end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[6]) == 1 or (score and tonumber(score) >= @FLOOR@) then
  redis.call('ZADD', KEYS[7], now, ARGV[1])
  redis.call('PUBLISH', ARGV[4], 'cancel')
  return 2
end
if not score then
  -- Held back by its key's limit (docs/design.md, "Per-key limits"): in its key's waiting set, not the queue.
  local k = redis.call('HGET', KEYS[9] .. 'held', ARGV[1])
  if not k then return 0 end
  redis.call('HDEL', KEYS[9] .. 'held', ARGV[1])
  redis.call('ZREM', KEYS[9] .. 'wait:' .. k, ARGV[1])
  if redis.call('HEXISTS', KEYS[9] .. 'running', k) == 0 and redis.call('EXISTS', KEYS[9] .. 'wait:' .. k) == 0 then
    redis.call('ZREM', KEYS[9] .. 'index', k)
    redis.call('ZREM', KEYS[9] .. 'timers', k)
  end
end
local pk = redis.call('HGET', KEYS[9] .. 'pend', ARGV[1])
if pk then
  redis.call('HDEL', KEYS[9] .. 'pend', ARGV[1])
  if redis.call('HINCRBY', KEYS[9] .. 'pending', pk, -1) <= 0 then redis.call('HDEL', KEYS[9] .. 'pending', pk) end
end
redis.call('ZREM', KEYS[1], ARGV[1])
events_to(KEYS[11], KEYS[12], ARGV[5])
local tries = tonumber(redis.call('GET', KEYS[4]) or '0')
emit('cancelled', ARGV[1], 'try', tries > 0 and tries or nil, 'reason', ARGV[6])
tally('cancelled')
redis.call('DEL', KEYS[2], KEYS[4], KEYS[5], KEYS[10])
redis.call('ZREM', KEYS[7], ARGV[1])
if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3]) end
if KEYS[13] then redis.call('PEXPIRE', KEYS[13], ARGV[3]) end
return 1
""".replace("@FLOOR@", str(PARKED_FLOOR))
)


def cancelled_result(
    spec: QueueSpec, job_id: str, payload: bytes | None, tries: int, reason: str, now_ms: int, start_ms: int = 0
) -> bytes:
    """arq's result of a cancelled job, in the queue's serializer (nothing is ever unpickled: the function
    name and enqueue time of a pickled payload are read from its opcodes)."""
    function, enqueued, args, kwargs = "<unknown>", 0, [], {}
    if payload is not None:
        described = _describe(payload)
        function = str(described.get("f", function))
        enqueued = described.get("et", 0) if isinstance(described.get("et"), int) else 0
        if spec.serializer == "json":
            args, kwargs = described.get("a", []), described.get("k", {})
    value: Any = reason if spec.serializer == "json" else asyncio.CancelledError(reason)
    data = {
        "t": tries, "f": function, "a": args, "k": kwargs, "et": enqueued, "s": False, "r": value,
        "st": start_ms or now_ms, "ft": now_ms, "q": spec.queue_key, "id": job_id, "x": CANCELLED_MARK,
    }  # fmt: skip
    dumps, _ = serializers.for_queue(spec.serializer)
    try:
        return dumps(data)
    except Exception:  # arguments that no longer serialize: keep the cancellation, drop them
        return dumps(data | {"a": [], "k": {}})


def _describe(payload: bytes) -> dict[Any, Any]:
    try:
        value = peek(payload) if looks_pickled(payload) else serializers.json_loads(payload)
    except (PeekError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


async def cancel(redis: Redis, spec: QueueSpec, job_id: str, reason: str = "cancelled on request") -> CancelOutcome:
    """Cancel one job of ``spec``'s queue (see the module docstring for what happens when)."""
    qkeys = keys.QueueKeys.of(spec, redis)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(qkeys.job(job_id))
        pipe.get(qkeys.retry(job_id))
        pipe.execute_command("TIME")
        payload, tries, (seconds, micros) = await pipe.execute()
    now_ms = time_ms(seconds, micros)
    keep = spec.retention.failed_seconds > 0
    result = cancelled_result(spec, job_id, payload, int(tries or 0), reason, now_ms) if keep else b""
    [code] = await run_scripts(
        redis,
        [
            (
                CANCEL_LUA,
                [
                    qkeys.queue,
                    qkeys.job(job_id),
                    qkeys.result(job_id),
                    qkeys.retry(job_id),
                    qkeys.error(job_id),
                    qkeys.in_progress(job_id),
                    qkeys.abort,
                    qkeys.dlq,
                    qkeys.groups,
                    qkeys.group(job_id),
                    qkeys.events,
                    qkeys.totals,
                    qkeys.logs(job_id),
                ],
                [
                    job_id,
                    result,
                    max(spec.retention.failed_seconds * 1000, 1),
                    qkeys.wake,
                    spec.events.stream_max,
                    reason,
                ],
            )
        ],
    )
    return {
        1: CancelOutcome.CANCELLED,
        2: CancelOutcome.CANCELLING,
        3: CancelOutcome.FINISHED,
        0: CancelOutcome.NOT_FOUND,
    }[int(code)]


def is_cancelled_result(data: dict[Any, Any]) -> bool:
    return data.get("x") == CANCELLED_MARK and data.get("s") is False
