"""The dead-letter store of a queue: list, show, requeue and purge.

Workers write an entry when a job has used up its tries (or cannot run at all): the hash
``arqscale:<queue>:dlq`` maps the job id to a ``DeadJob`` JSON document, and the sorted set
``arqscale:<queue>:dlq:index`` orders the ids by failure time.

The worker also writes arq's failed result (``arq:result:<id>``, success false) with the entry, so
arq clients see the job failed; requeue and purge delete it in the same script as the entry.

Requeueing never decodes the payload: it writes the original bytes (``payload_b64``) back under the
same job id, resets the try counter and publishes on the wake channel. One Lua script does it, so a
job is never both dead and queued, and a requeue racing another requeue or a live job with the same id
changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import inspect
from collections.abc import Awaitable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from arqscale.core import scores
from arqscale.core.events import EVENTS_LUA
from arqscale.core.keys import QueueKeys
from arqscale.core.lua import NOW_LUA, LuaTemplate
from arqscale.core.models import DeadJob
from arqscale.core.producer import PAYLOAD_TTL_MS
from arqscale.core.safe_data import safe_copy
from arqscale.core.spec import QueueSpec

# KEYS: dlq, dlq index, job, queue, retry, error, result, in-progress, progress, events stream, totals hash
# ARGV: job id, payload, score, payload ttl ms, wake channel, the entry as read (to detect a race), events max len
# Writes the job's `requeued` event (reason dead_letter); its try counter restarts at 0, which also tells the
# pickup that an event announced it (arqscale.core.events).
REQUEUE_LUA = (
    NOW_LUA
    + EVENTS_LUA
    + """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
if entry ~= ARGV[6] then return -1 end
if redis.call('EXISTS', KEYS[3], KEYS[8]) > 0 or redis.call('ZSCORE', KEYS[4], ARGV[1]) then return -2 end
redis.call('PSETEX', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('DEL', KEYS[6], KEYS[7], KEYS[9])
redis.call('SET', KEYS[5], 0, 'PX', ARGV[4])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[5], '1')
events_to(KEYS[10], KEYS[11], ARGV[7])
emit('requeued', ARGV[1], 'reason', 'dead_letter')
tally('requeued')
return 1
"""
)

# A dead job also has arq's failed result (``arq:result:<id>``, written with the entry, see
# ``pickup.FINISH_LUA``): purging an entry deletes it in the same script, or the job would stay "failed"
# and the producer would refuse its id.
_PURGE_ONE = """
local function purge(id)
  redis.call('ZREM', KEYS[2], id)
  if redis.call('HDEL', KEYS[1], id) == 0 then return 0 end
  redis.call('DEL', '@RESULT@' .. id, '@LOGS@' .. id)
  return 1
end
"""

# KEYS: dlq, dlq index.  ARGV: job ids.  Returns how many entries were deleted.
PURGE_IDS_LUA = LuaTemplate(
    _PURGE_ONE
    + """
local n = 0
for i = 1, #ARGV do n = n + purge(ARGV[i]) end
return n
"""
)

# KEYS: dlq, dlq index.  ARGV: max failure time (ZRANGEBYSCORE syntax: '(ms' or '+inf'), batch size.
# Returns {ids taken from the index, entries deleted}.
PURGE_RANGE_LUA = LuaTemplate(
    _PURGE_ONE
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, id in ipairs(ids) do n = n + purge(id) end
return {#ids, n}
"""
)

BATCH = 500


async def _awaited(value: Awaitable[Any] | Any) -> Any:
    # redis-py types its commands as "awaitable or value" for its sync and async clients at once.
    return await value if inspect.isawaitable(value) else value


class RequeueOutcome(StrEnum):
    REQUEUED = "requeued"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # a live job holds this id; requeueing would run it twice
    NO_PAYLOAD = "no_payload"  # the worker found no payload to keep, so there is nothing to run again
    RACED = "raced"  # the entry changed while we read it (another requeue, or the job died again)


@dataclass
class DeadLetterPage:
    queue: str
    total: int
    offset: int
    items: list[DeadJob]


@dataclass
class RequeueSummary:
    requeued: list[str] = field(default_factory=list)
    skipped: dict[str, RequeueOutcome] = field(default_factory=dict)


class DeadLetters:
    """The dead-letter store of one queue."""

    def __init__(self, redis: Redis, spec: QueueSpec) -> None:
        self.redis = redis
        self.spec = spec
        self.keys = QueueKeys.of(spec, redis)
        self._requeue = redis.register_script(REQUEUE_LUA)
        self._purge_ids = redis.register_script(PURGE_IDS_LUA.for_keys(self.keys).source)
        self._purge_range = redis.register_script(PURGE_RANGE_LUA.for_keys(self.keys).source)

    async def count(self) -> int:
        return int(await self.redis.zcard(self.keys.dlq_index))

    async def page(self, offset: int = 0, limit: int = 50) -> DeadLetterPage:
        """Entries, most recent failure first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.dlq_index)
            pipe.zrevrange(self.keys.dlq_index, offset, offset + limit - 1)
            total, ids = await pipe.execute()
        raws: list[bytes | None] = await _awaited(self.redis.hmget(self.keys.dlq, ids)) if ids else []
        items = [self._parse(job_id.decode(), raw) for job_id, raw in zip(ids, raws, strict=True) if raw is not None]
        return DeadLetterPage(queue=self.spec.name, total=int(total), offset=offset, items=items)

    async def get(self, job_id: str) -> DeadJob | None:
        raw: bytes | None = await _awaited(self.redis.hget(self.keys.dlq, job_id))
        return None if raw is None else self._parse(job_id, raw)

    def _parse(self, job_id: str, raw: bytes) -> DeadJob:
        try:
            # safe_copy: an entry written before the worker escaped and capped what it stores may hold text
            # that is not Unicode or values nested too deep to show; every reader gets a showable copy.
            return safe_copy(DeadJob.model_validate_json(raw))
        except ValidationError:
            # A damaged entry is still listed (and can be purged) rather than hidden.
            return DeadJob(
                job_id=job_id, queue=self.spec.name, attempts=0, error="unreadable dead-letter entry", failed_at=0
            )

    async def requeue(self, job_id: str) -> RequeueOutcome:
        """Put the job back on its queue under the same id, with its try counter reset."""
        raw: bytes | None = await _awaited(self.redis.hget(self.keys.dlq, job_id))
        if raw is None:
            return RequeueOutcome.NOT_FOUND
        entry = self._parse(job_id, raw)
        if entry.payload_b64 is None:
            return RequeueOutcome.NO_PAYLOAD
        try:
            payload = base64.b64decode(entry.payload_b64, validate=True)
        except (binascii.Error, ValueError):
            return RequeueOutcome.NO_PAYLOAD
        priority = entry.priority if entry.priority is not None else self.spec.normal_priority
        priority = min(max(priority, 0), self.spec.priority_levels - 1)
        score = scores.job_score(scores.now_ms(), priority, self.spec)
        code = await self._requeue(
            keys=[
                self.keys.dlq,
                self.keys.dlq_index,
                self.keys.job(job_id),
                self.keys.queue,
                self.keys.retry(job_id),
                self.keys.error(job_id),
                self.keys.result(job_id),
                self.keys.in_progress(job_id),
                self.keys.progress(job_id),
                self.keys.events,
                self.keys.totals,
            ],
            args=[job_id, payload, score, PAYLOAD_TTL_MS, self.keys.wake, raw, self.spec.events.stream_max],
        )
        return {
            1: RequeueOutcome.REQUEUED,
            0: RequeueOutcome.NOT_FOUND,
            -1: RequeueOutcome.RACED,
            -2: RequeueOutcome.CONFLICT,
        }[int(code)]

    async def requeue_many(self, job_ids: list[str] | None = None) -> RequeueSummary:
        """Requeue these ids, or every entry when ``job_ids`` is None."""
        summary = RequeueSummary()
        if job_ids is None:
            job_ids = [m.decode() for m in await self.redis.zrange(self.keys.dlq_index, 0, -1)]
        for job_id in job_ids:
            outcome = await self.requeue(job_id)
            if outcome is RequeueOutcome.REQUEUED:
                summary.requeued.append(job_id)
            else:
                summary.skipped[job_id] = outcome
        return summary

    async def purge(self, job_ids: list[str] | None = None, older_than_seconds: float | None = None) -> int:
        """Delete entries (and their jobs' failed results): these ids, those that failed at least
        ``older_than_seconds`` ago by Redis' clock (the clock that dated them: "older than 0 s" takes an entry
        written in this millisecond, as cleaning completed jobs does), or all.

        Returns how many entries were deleted.
        """
        store = [self.keys.dlq, self.keys.dlq_index]
        if job_ids is not None:
            total = 0
            for i in range(0, len(job_ids), BATCH):
                total += int(await self._purge_ids(keys=store, args=job_ids[i : i + BATCH]))
            return total
        upto = "+inf"
        if older_than_seconds is not None:
            now_ms = scores.time_ms(*await _awaited(self.redis.time()))
            upto = str(now_ms - int(older_than_seconds * 1000))
        total = 0
        # In batches, so one purge of a huge store does not block Redis for long.
        while True:
            taken, deleted = await self._purge_range(keys=store, args=[upto, BATCH])
            total += int(deleted)
            if int(taken) < BATCH:
                break
        if older_than_seconds is None:
            # Entries missing from the index (written by hand, or a damaged store) go too.
            leftovers = [k.decode() for k in await _awaited(self.redis.hkeys(self.keys.dlq))]
            if leftovers:
                total += await self.purge(leftovers)
        return total
