"""Reading job events: history, a live tail (async iterator), and waiting for one job's end.

The stream is written by the scripts (``arqscale.core.events``); this module only reads it. A reader keeps
the id of the last event it handled and asks for what came after (``XREAD``), so it never misses or repeats
an event while its entry is still in the stream. A batched entry holds the events of many jobs under
consecutive ids (``events.split_entry``); a reader resuming after one of them first reads the rest of
that entry (``XREAD`` starts after the entry's own id, its first event's). An entry trimmed before it was
read is gone: the stream keeps the queue's ``events.max_len`` most recent entries (``gap`` says when that
happened to a reader).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from arq.jobs import DeserializationError, deserialize_result
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from arqscale.core import keys, serializers
from arqscale.core.cancellation import is_cancelled_result
from arqscale.core.events import (
    Event,
    Fields,
    events_key,
    id_tuple,
    is_stream_id,
    parse_totals,
    split_entry,
    totals_key,
)
from arqscale.core.spec import QueueSpec

BLOCK_MS = 1000  # one XREAD waits at most this long: below every client's socket timeout (the API's is 1.5 s)
BATCH = 500  # entries per read
POLL_SECONDS = 0.2  # wait() on a queue whose events are off polls the result this often


class JobFailed(Exception):
    """``wait()``: the job is dead (its last try failed, or it could not run). ``error`` is its error text."""

    def __init__(self, job_id: str, error: str) -> None:
        super().__init__(f"job {job_id} failed: {error}")
        self.job_id = job_id
        self.error = error


class JobCancelled(Exception):
    """``wait()``: the job was cancelled."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} was cancelled: {reason}")
        self.job_id = job_id
        self.reason = reason


class WaitTimeout(TimeoutError):
    """``wait()``: the job did not end within the timeout (it may still end later)."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id} did not end within {timeout:g}s")
        self.job_id = job_id


async def last_id(redis: Redis, queue: str) -> str:
    """The id of the newest event (``0-0`` when the stream is empty): read after it to get only new events."""
    newest = await redis.xrevrange(events_key(queue, cluster=keys.is_cluster(redis)), "+", "-", count=1)
    if not newest:
        return "0-0"
    events = split_entry(*newest[0])
    return events[-1][0] if events else _text(newest[0][0])


async def rest_of_entry(redis: Redis, stream: str, after: str) -> list[tuple[str, Fields]]:
    """The events after ``after`` in the entry that holds it: a batched entry's later jobs, which a read after
    ``after`` would miss (the entry's own id is its first event's). [] when ``after`` ends its entry."""
    if after == "0-0":
        return []
    got = await redis.xrevrange(stream, after, "-", count=1)
    if not got:
        return []
    point = id_tuple(after)
    return [(i, f) for i, f in split_entry(*got[0]) if id_tuple(i) > point]


async def history(
    redis: Redis,
    queue: str,
    *,
    after: str = "0-0",
    job: str | None = None,
    limit: int = 1000,
    scan_max: int | None = None,
) -> list[Event]:
    """Kept events after ``after`` (exclusive), oldest first, at most ``limit``; with ``job``, that job's only
    (the kept stream is scanned, at most ``events.max_len`` entries, or ``scan_max``)."""
    out: list[Event] = []
    stream = events_key(queue, cluster=keys.is_cluster(redis))
    start = "(" + after if after != "0-0" else "-"
    scanned = 0
    for event_id, fields in await rest_of_entry(redis, stream, after):
        event = Event.parse(queue, event_id, fields)
        if (job is None or event.job == job) and len(out) < limit:
            out.append(event)
    while len(out) < limit and (scan_max is None or scanned < scan_max):
        entries = await redis.xrange(stream, start, "+", count=BATCH)
        scanned += len(entries)
        for entry_id, fields in entries:
            for event in Event.parse_entry(queue, entry_id, fields):
                if job is None or event.job == job:
                    out.append(event)
                    if len(out) >= limit:
                        break
            if len(out) >= limit:
                break
        if len(entries) < BATCH:
            break
        start = "(" + _text(entries[-1][0])
    return out


class Events:
    """A live tail of a queue's events, as an async iterator::

        async for event in Events(redis, "email", job="job-1"):
            ...

    ``after``: a stream id to resume after (exclusive); ``"0-0"`` for every kept event; None (the default) for
    only those written from now on. ``job``: only that job's events. Runs until the caller stops iterating.
    ``gap`` turns True when ``after`` was older than the oldest kept entry: events in between were trimmed.
    """

    def __init__(
        self, redis: Redis, queue: str, *, after: str | None = None, job: str | None = None, block_ms: int = BLOCK_MS
    ) -> None:
        if after is not None and not is_stream_id(after):
            raise ValueError(f"after: {after!r} is not a stream id (<ms>-<seq>)")
        self.redis = redis
        self.queue = queue
        self._stream = events_key(queue, cluster=keys.is_cluster(redis))
        self.after = after
        self.job = job
        self.block_ms = block_ms
        self.gap = False
        self.last_id: str | None = after  # the last event handed out (or the starting point)
        self._rest: list[Event] = []  # the later events of the batched entry that holds ``after``
        self._started = False

    def __aiter__(self) -> AsyncGenerator[Event]:
        return self._tail()

    async def start(self) -> None:
        """Fix the starting point (the stream's newest id when following from now) and check for a gap."""
        self._started = True
        if self.last_id is None:
            self.last_id = await last_id(self.redis, self.queue)
        elif self.last_id != "0-0":
            self.gap = await trimmed_after(self.redis, self.queue, self.last_id)
            rest = await rest_of_entry(self.redis, self._stream, self.last_id)
            self._rest = [e for e in (Event.parse(self.queue, i, f) for i, f in rest) if self._wanted(e)]
            if rest:
                self.last_id = rest[-1][0]

    async def read(self, block_ms: float | None = None) -> list[Event]:
        """The next events (of at most ``BATCH`` entries), waiting up to ``block_ms`` for some; [] when none came.
        One XREAD: a caller that must stop (a timeout, a client that left) never has to cancel a read."""
        if not self._started:
            await self.start()
        assert self.last_id is not None
        if self._rest:
            out, self._rest = self._rest, []
            return out
        block = self.block_ms if block_ms is None else max(int(block_ms), 1)
        reply = await self.redis.xread({self._stream: self.last_id}, count=BATCH, block=block)
        out = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                events = Event.parse_entry(self.queue, entry_id, fields)
                self.last_id = events[-1].id if events else _text(entry_id)
                out += [e for e in events if self._wanted(e)]
        return out

    def _wanted(self, event: Event) -> bool:
        return self.job is None or event.job == self.job

    async def _tail(self) -> AsyncGenerator[Event]:
        await self.start()
        while True:
            for event in await self.read():
                yield event


async def trimmed_after(redis: Redis, queue: str, after: str) -> bool:
    """Entries newer than ``after`` may have been trimmed before a reader resuming there read them: some entry
    was removed and ``after`` is older than the oldest kept one (or than the newest deleted one). Only false
    when nothing was missed; True also when ``after`` itself was the last entry trimmed (Redis does not say)."""
    try:
        info = await redis.xinfo_stream(events_key(queue, cluster=keys.is_cluster(redis)))
    except ResponseError:  # no stream yet: nothing was ever trimmed
        return False
    point = id_tuple(after)
    deleted = info.get("max-deleted-entry-id")
    if deleted is not None and point < id_tuple(_text(deleted)):
        return True
    first = info.get("recorded-first-entry-id")
    removed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
    return removed and first is not None and point < id_tuple(_text(first))


async def totals(redis: Redis, queue: str) -> dict[str, int]:
    """The queue's counters (``events.TOTAL_FIELDS``)."""
    return (await read_totals(redis, [queue]))[queue]


async def read_totals(redis: Redis, queues: Sequence[str]) -> dict[str, dict[str, int]]:
    """The counters of several queues in one round trip."""
    if not queues:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.hgetall(totals_key(queue, cluster=keys.is_cluster(redis)))
        raws = await pipe.execute()
    return {queue: parse_totals(raw) for queue, raw in zip(queues, raws, strict=True)}


async def wait(redis: Redis, spec: QueueSpec, job_id: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (arq's Job.result(timeout=) shape)
    """The job's result once it ends: returns the task's return value (None when results are not kept), raises
    ``JobFailed`` (dead), ``JobCancelled`` or ``WaitTimeout``. Retries are waited through."""
    deadline = None if timeout is None else time.monotonic() + timeout
    # The stream position first, then the job's state: an end written in between is in the stream after it.
    start = await last_id(redis, spec.name) if spec.events.enabled else "0-0"
    while True:
        ended, value = await _ended(redis, spec, job_id)
        if ended:
            return value
        if not spec.events.enabled:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job_id, timeout or 0)
            await asyncio.sleep(POLL_SECONDS)
            continue
        final = await _next_final(redis, spec, job_id, start, deadline)
        if final is None:
            raise WaitTimeout(job_id, timeout or 0)
        if final.event == "dead":
            # The result may not be kept (retention.failed_seconds 0): the event carries the error.
            ended, value = await _ended(redis, spec, job_id)
            if ended:
                return value
            raise JobFailed(job_id, final.error or "failed")
        if final.event == "cancelled":
            raise JobCancelled(job_id, final.reason or "cancelled")
        ended, value = await _ended(redis, spec, job_id)
        return value if ended else None  # completed, result not kept (retention.completed_seconds 0)


async def _next_final(redis: Redis, spec: QueueSpec, job_id: str, start: str, deadline: float | None) -> Event | None:
    tail = Events(redis, spec.name, after=start, job=job_id)
    while True:
        left_ms = BLOCK_MS if deadline is None else (deadline - time.monotonic()) * 1000
        if left_ms <= 0:
            return None
        for event in await tail.read(min(left_ms, BLOCK_MS)):
            if event.final:
                return event


async def _ended(redis: Redis, spec: QueueSpec, job_id: str) -> tuple[bool, Any]:
    """(True, result) or raises when the job's result says it ended; (False, None) while it has not."""
    async with redis.pipeline(transaction=False) as pipe:
        k = keys.QueueKeys.of(spec, redis)
        pipe.get(k.result(job_id))
        pipe.hget(k.dlq, job_id)
        raw, dead = await pipe.execute()
    if raw is None:
        if dead is not None:
            raise JobFailed(job_id, _dead_error(dead))
        return False, None
    _, loads = serializers.for_queue(spec.serializer)
    try:
        data = loads(raw)
    except Exception as exc:
        raise DeserializationError(f"job {job_id}: unreadable result: {exc}") from exc
    if is_cancelled_result(data):
        raise JobCancelled(job_id, str(data.get("r") or "cancelled"))
    info = deserialize_result(raw, deserializer=loads)
    if info.success:
        return True, info.result
    if isinstance(info.result, BaseException):
        raise JobFailed(job_id, str(info.result)) from info.result
    raise JobFailed(job_id, str(info.result))


def _dead_error(raw: bytes) -> str:
    try:
        value = json.loads(raw)
        return str(value.get("error", "failed")) if isinstance(value, Mapping) else "failed"
    except ValueError:
        return "failed"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
