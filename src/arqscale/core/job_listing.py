"""Pages of a queue's jobs in one state (waiting, active, delayed, completed, failed), Bull Board style.

Every page costs two round trips whatever the queue's size and the offset (a third, for the ``held`` count of a
``waiting`` page on a queue with per-key limits): one Lua script finds the
ids of the page and the state's total, then one pipeline reads what the list shows about those ids
(payloads, try counters, last errors, progress, results or dead-letter entries).

Orders:

- ``waiting``: the order workers take them: jobs whose lease expired first (their worker died or
  stalled; the next pickup sweeps them back ahead of the rest), then the most urgent priority band,
  then by ready time.
- ``delayed``: by ready time, soonest first, across bands (ties: the more urgent band first).
- ``active``: jobs with a live lease (parked in the queue above every band, ``scores.LEASED``, or in the
  ``active`` set of workers from before), in the order they were taken (priority band, then ready time, from
  their ownership records). There are at most as many as the workers' concurrency, so the script reads them
  all and sorts them.
- ``completed``: the ``:completed`` index, newest first, within ``retention.completed_seconds``
  (the same window as the ``completed`` count); each job's own finish time, which the list shows.
- ``failed``: the dead-letter index, newest failure first.

Offsets are found by rank (``ZRANGE`` by index, ``ZCOUNT`` for band edges), never by walking past
skipped entries, so a deep page costs about what the first one does. Nothing is unpickled: pickled
payloads and results are read with ``pickle_peek``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis

from arqscale.core import scores
from arqscale.core.job_status import PICKLE_NOTE, decode_stored, from_result, last_error, ms_to_s, parse_progress, text
from arqscale.core.keys import QueueKeys, running_try
from arqscale.core.lua import LEASE_LUA, NOW_LUA, LuaTemplate, run_scripts
from arqscale.core.models import DeadJob, Progress
from arqscale.core.spec import QueueSpec

MAX_LIMIT = 200
DEFAULT_LIMIT = 20
MAX_OFFSET = 10**9


class ListState(StrEnum):
    """The states a queue's jobs are listed by (BullMQ's names, as in the counts)."""

    WAITING = "waiting"
    ACTIVE = "active"
    DELAYED = "delayed"
    COMPLETED = "completed"
    FAILED = "failed"


class JobSummary(BaseModel):
    """One job in a list: enough to recognise it; ``GET /v1/jobs/{job_id}`` has the rest."""

    job_id: str
    function: str | None = None
    priority: int | None = Field(default=None, description="0 is the most urgent")
    attempts: int = Field(default=0, description="tries started so far")
    enqueued_at: float | None = None
    scheduled_for: float | None = Field(default=None, description="when it may run (waiting, delayed, active)")
    started_at: float | None = None
    finished_at: float | None = Field(default=None, description="completed: when it finished; failed: when it died")
    lease_expires_at: float | None = Field(default=None, description="active: when its lease runs out unless renewed")
    progress: Progress | None = None
    error: str | None = Field(default=None, description="failed: the error; waiting or delayed: the last try's error")
    note: str | None = Field(default=None, description="why a field is empty, e.g. payload not shown (pickle queue)")


class JobList(BaseModel):
    queue: str
    state: ListState
    total: int = Field(description="jobs in this state now")
    offset: int
    limit: int
    items: list[JobSummary]
    held: int | None = Field(
        default=None,
        description="waiting, on a queue with per-key limits: ready jobs held back by their key's limit, not in "
        "this list nor its total (`GET /v1/queues/{queue}/groups` lists them by key); null otherwise",
    )


# KEYS: queue, active, completed, dlq index.
# ARGV: mode, offset, limit, completed retention ms, number of bands, then each band's low as a decimal
# string. "Now" is Redis' clock; scores are formatted with %d (Lua's tostring would round 15-digit ones).
# Returns {total, ids, scores, extra}: scores are queue scores (waiting, delayed), lease expiries
# (active), finished ms (completed) or failed ms (failed); extra holds active jobs' queue scores.
LIST_LUA = (
    (
        NOW_LUA
        + LEASE_LUA
        + """
local kq, ka, kc, kd = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode = ARGV[1]
local offset = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cutoff = now - tonumber(ARGV[4])
local nb = tonumber(ARGV[5])
local function fmt(x) return string.format('%d', x) end
local bands = {}
for b = 1, nb do
  local nlow = tonumber(ARGV[5 + b])
  bands[b] = {nlow = nlow, floor = fmt(nlow - @HALF@), top = fmt(nlow + now), high = fmt(nlow + @HALF@)}
end
local ids, out_scores, extra = {}, {}, {}

local function by_rank(key, total, reverse)
  if offset >= total or limit == 0 then return end
  local last = math.min(offset + limit, total) - 1
  local got
  if reverse then
    got = redis.call('ZREVRANGE', key, offset, last, 'WITHSCORES')
  else
    got = redis.call('ZRANGE', key, offset, last, 'WITHSCORES')
  end
  for i = 1, #got, 2 do
    ids[#ids + 1] = got[i]
    out_scores[#out_scores + 1] = got[i + 1]
  end
end

if mode == 'failed' then
  local total = redis.call('ZCARD', kd)
  by_rank(kd, total, true)
  return {total, ids, out_scores, extra}
end

if mode == 'completed' then
  -- Newest first; entries older than the retention window sit at the end and are not counted.
  local total = redis.call('ZCOUNT', kc, cutoff, '+inf')
  by_rank(kc, total, true)
  return {total, ids, out_scores, extra}
end

if mode == 'active' then
  -- Every live lease (as many as the workers' concurrency), sorted by queue score: the order they were
  -- taken in, stable while heartbeats move the lease expiries forward.
  local running = {}
  local function add(got, parked)
    for i = 1, #got, 2 do
      local s = lease_of(got[i])
      local expiry = parked and fmt(tonumber(got[i + 1]) - @LEASED@) or got[i + 1]
      running[#running + 1] = {s and tonumber(s) or math.huge, got[i], expiry, s or ''}
    end
  end
  add(redis.call('ZRANGEBYSCORE', kq, '(' .. leased_s(now), '+inf', 'WITHSCORES'), true)
  add(redis.call('ZRANGEBYSCORE', ka, '(' .. now, '+inf', 'WITHSCORES'), false)
  table.sort(running, function(x, y)
    if x[1] ~= y[1] then return x[1] < y[1] end
    return x[2] < y[2]
  end)
  for i = offset + 1, math.min(offset + limit, #running) do
    ids[#ids + 1] = running[i][2]
    out_scores[#out_scores + 1] = running[i][3]
    extra[#extra + 1] = running[i][4]
  end
  return {#running, ids, out_scores, extra}
end

if mode == 'waiting' then
  -- Expired leases first (the next pickup sweeps them back ahead of everything), then each band's
  -- ready jobs by rank. Running jobs are parked above every band.
  local lnow = leased_s(now)
  local parked = redis.call('ZCOUNT', kq, '@LEASED@', lnow)
  local stalled = parked + redis.call('ZCOUNT', ka, '-inf', now)
  local total = stalled
  for b = 1, nb do
    local band = bands[b]
    band.first = redis.call('ZCOUNT', kq, '-inf', '(' .. band.floor)
    band.ready = redis.call('ZCOUNT', kq, band.floor, band.top)
    total = total + band.ready
  end
  local skip = offset
  if skip < stalled and limit > 0 then
    local got
    if skip < parked then
      got = redis.call('ZRANGEBYSCORE', kq, '@LEASED@', lnow, 'LIMIT', skip, limit)
      if #got < limit then
        local legacy = redis.call('ZRANGEBYSCORE', ka, '-inf', now, 'LIMIT', 0, limit - #got)
        for _, id in ipairs(legacy) do got[#got + 1] = id end
      end
    else
      got = redis.call('ZRANGEBYSCORE', ka, '-inf', now, 'LIMIT', skip - parked, limit)
    end
    for _, id in ipairs(got) do
      ids[#ids + 1] = id
      out_scores[#out_scores + 1] = lease_of(id) or fmt(now)
    end
    skip = 0
  else
    skip = skip - stalled
  end
  for b = 1, nb do
    local band = bands[b]
    if #ids < limit and band.ready > 0 then
      if skip >= band.ready then
        skip = skip - band.ready
      else
        local idx = band.first + skip
        local last = math.min(band.first + band.ready - 1, idx + (limit - #ids) - 1)
        local got = redis.call('ZRANGE', kq, idx, last, 'WITHSCORES')
        for i = 1, #got, 2 do
          ids[#ids + 1] = got[i]
          out_scores[#out_scores + 1] = got[i + 1]
        end
        skip = 0
      end
    end
  end
  return {total, ids, out_scores, extra}
end

-- delayed: merge the bands by ready time. Find the smallest ready time T with more than `offset`
-- delayed jobs at or before it (binary search on ZCOUNTs), then take the page from T on.
local function before(t)  -- delayed jobs ready at or before t (ms)
  local n = 0
  for b = 1, nb do
    n = n + redis.call('ZCOUNT', kq, '(' .. bands[b].top, fmt(bands[b].nlow + t))
  end
  return n
end
local total, latest = 0, -1
for b = 1, nb do
  local band = bands[b]
  total = total + redis.call('ZCOUNT', kq, '(' .. band.top, '(' .. band.high)
  local last = redis.call('ZREVRANGEBYSCORE', kq, '(' .. band.high, '(' .. band.top, 'WITHSCORES', 'LIMIT', 0, 1)
  if #last > 0 then
    local at = math.floor(tonumber(last[2]) - band.nlow)
    if at > latest then latest = at end
  end
end
if offset >= total or limit == 0 then return {total, ids, out_scores, extra} end
local lo, hi = now + 1, latest
if hi < lo then hi = lo end
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if before(mid) > offset then hi = mid else lo = mid + 1 end
end
local skip = offset - before(lo - 1)
local candidates = {}
for b = 1, nb do
  local band = bands[b]
  local from = '(' .. fmt(band.nlow + lo - 1)  -- above the top: lo > now
  local got = redis.call('ZRANGEBYSCORE', kq, from, '(' .. band.high, 'WITHSCORES', 'LIMIT', 0, skip + limit)
  for i = 1, #got, 2 do
    candidates[#candidates + 1] = {tonumber(got[i + 1]) - band.nlow, b, got[i], got[i + 1]}
  end
end
table.sort(candidates, function(x, y)
  if x[1] ~= y[1] then return x[1] < y[1] end
  if x[2] ~= y[2] then return x[2] < y[2] end
  return x[3] < y[3]
end)
for i = skip + 1, math.min(skip + limit, #candidates) do
  ids[#ids + 1] = candidates[i][3]
  out_scores[#out_scores + 1] = candidates[i][4]
end
return {total, ids, out_scores, extra}
"""
    )
    .replace("@HALF@", str(scores.BAND // 2))
    .replace("@LEASED@", str(scores.LEASED))
)

LIST_SCRIPT = LuaTemplate(LIST_LUA)


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    ids: list[str]
    scores: list[float]
    extra: list[float | None]


def script_args(
    spec: QueueSpec, state: ListState, offset: int, limit: int, *, cluster: bool = False
) -> tuple[list[str], list[Any]]:
    k = QueueKeys.for_queue(spec.name, spec.queue_key, cluster=cluster)
    bands = scores.bands(spec)
    argv: list[Any] = [str(state), offset, limit, spec.retention.completed_seconds * 1000, len(bands)]
    argv += [str(band.low) for band in bands]
    return [k.queue, k.active, k.completed, k.dlq_index], argv


def _float(raw: Any) -> float | None:
    if raw is None or raw == b"" or raw == "":
        return None
    return float(raw)


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def parse_page(reply: Sequence[Any]) -> Page:
    total, ids, raw_scores, extra = reply
    return Page(
        total=int(total),
        ids=[_text(i) for i in ids],
        scores=[float(s) for s in raw_scores],
        extra=[_float(e) for e in extra],
    )


def _tries(raw: bytes | None) -> int:
    return int(raw) if raw is not None and raw.isdigit() else 0


def _queued(
    spec: QueueSpec, job_id: str, score: float | None, payload: bytes | None, tries: bytes | None
) -> JobSummary:
    item = JobSummary(job_id=job_id, attempts=_tries(tries))
    if score is not None:
        item.priority, ready_ms = scores.split_score(score, spec)
        item.scheduled_for = ready_ms / 1000
    decoded = decode_stored(payload)
    if decoded is not None:
        item.function = text(decoded.data.get("f"))
        item.enqueued_at = ms_to_s(decoded.data.get("et"))
        if decoded.pickled:
            item.note = PICKLE_NOTE
    elif payload is not None:
        item.note = "payload unreadable"
    else:
        item.note = "payload missing"
    return item


def _completed(spec: QueueSpec, job_id: str, finished_ms: float, raw: bytes | None) -> JobSummary:
    decoded = decode_stored(raw)
    if decoded is None:
        note = "result expired" if raw is None else "result unreadable"
        return JobSummary(job_id=job_id, finished_at=finished_ms / 1000, note=note)
    status = from_result(job_id, decoded, {spec.name: spec}, {})
    return JobSummary(
        job_id=job_id,
        function=status.function,
        attempts=status.attempts,
        enqueued_at=status.enqueued_at,
        started_at=status.started_at,
        # The index's time, which orders the list (Redis' clock at the finish, less the record's wait).
        finished_at=finished_ms / 1000,
        error=status.error,
        note=status.note,
    )


def _failed(spec: QueueSpec, job_id: str, failed_ms: float, raw: bytes | None) -> JobSummary:
    if raw is None:  # removed between the two reads
        return JobSummary(job_id=job_id, finished_at=failed_ms / 1000, note="dead-letter entry gone")
    try:
        entry = DeadJob.model_validate_json(raw)
    except ValidationError:
        return JobSummary(job_id=job_id, finished_at=failed_ms / 1000, error="unreadable dead-letter entry")
    note = None
    if entry.function is None and entry.payload_b64 is not None:
        note = _dead_note(entry.payload_b64)
    return JobSummary(
        job_id=job_id,
        function=entry.function,
        priority=entry.priority,
        attempts=entry.attempts,
        enqueued_at=entry.enqueued_at,
        finished_at=entry.failed_at,
        error=entry.error,
        note=note,
    )


def _dead_note(payload_b64: str) -> str | None:
    try:
        payload = base64.b64decode(payload_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    decoded = decode_stored(payload)
    return PICKLE_NOTE if decoded is not None and decoded.pickled else None


class JobLister:
    """Lists one queue's jobs by state, a page at a time."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def page(self, spec: QueueSpec, state: ListState, offset: int = 0, limit: int = DEFAULT_LIMIT) -> JobList:
        if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"offset must be 0..{MAX_OFFSET} and limit 1..{MAX_LIMIT}")
        k = QueueKeys.of(spec, self.redis)
        call = (LIST_SCRIPT.for_keys(k), *script_args(spec, state, offset, limit, cluster=k.cluster))
        [reply] = await run_scripts(self.redis, [call])
        page = parse_page(reply)
        items = await self._items(spec, state, page) if page.ids else []
        listed = JobList(queue=spec.name, state=state, total=page.total, offset=offset, limit=limit, items=items)
        if state is ListState.WAITING and spec.group is not None:
            # One more round trip, only for these pages: held jobs are not in the queue the script reads.
            held_key = QueueKeys.of(spec, self.redis).groups + "held"
            listed.held = await self.redis.hlen(held_key)  # type: ignore[misc]
        return listed

    async def _items(self, spec: QueueSpec, state: ListState, page: Page) -> list[JobSummary]:
        ids = page.ids
        k = QueueKeys.of(spec, self.redis)
        async with self.redis.pipeline(transaction=False) as pipe:
            if state is ListState.FAILED:
                pipe.hmget(k.dlq, ids)
            elif state is ListState.COMPLETED:
                pipe.execute_command("MGET", *[k.result(i) for i in ids])
            else:
                pipe.execute_command("MGET", *[k.job(i) for i in ids])
                pipe.execute_command("MGET", *[k.retry(i) for i in ids])
                pipe.execute_command("MGET", *[k.error(i) for i in ids])
                pipe.execute_command("MGET", *[k.progress(i) for i in ids])
                if state is ListState.ACTIVE:  # a running job's try is in its ownership record (keys.running_try)
                    pipe.execute_command("MGET", *[k.in_progress(i) for i in ids])
            replies = await pipe.execute()
        if state is ListState.FAILED:
            return [_failed(spec, i, s, raw) for i, s, raw in zip(ids, page.scores, replies[0], strict=True)]
        if state is ListState.COMPLETED:
            return [_completed(spec, i, s, raw) for i, s, raw in zip(ids, page.scores, replies[0], strict=True)]
        payloads, tries, errors, progress = replies[:4]
        records = replies[4] if state is ListState.ACTIVE else [None] * len(ids)
        items = []
        for n, job_id in enumerate(ids):
            queue_score = page.extra[n] if state is ListState.ACTIVE else page.scores[n]
            running = running_try(records[n])
            job_try = str(running).encode() if running is not None else tries[n]
            item = _queued(spec, job_id, queue_score, payloads[n], job_try)
            if state is ListState.ACTIVE:
                item.lease_expires_at = page.scores[n] / 1000
                item.progress = parse_progress(progress[n])
                if payloads[n] is None:
                    item.note = None  # a running job's payload may be gone for a moment as it finishes
            else:
                item.error = last_error(errors[n])
            items.append(item)
        return items
