"""Enqueue jobs onto arqscale queues from Python.

Jobs land in arq's own layout (``arq:job:<id>`` plus the queue's sorted set), so arq's tools can read
them; the same round trip also publishes on the queue's wake channel (once per batch) so an idle worker
starts at once instead of waiting for its next poll.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from arq.jobs import SerializationError, serialize_job
from redis.asyncio import Redis

from arqscale.core import cancellation, event_stream, keys, scores, serializers, tracing
from arqscale.core.cancellation import CancelOutcome
from arqscale.core.event_stream import Events
from arqscale.core.events import EVENTS_PER_ENTRY
from arqscale.core.job_status import JobStatusReader
from arqscale.core.lua import (
    LEASE_LUA,
    NOW_LUA,
    Call,
    CallBatcher,
    LibraryFunction,
    LibraryUse,
    LuaLibrary,
    LuaScript,
    LuaTemplate,
    run_scripts,
)
from arqscale.core.models import EnqueueResult, JobRequest, JobState
from arqscale.core.safe_data import MAX_PAYLOAD_BYTES, UnsafeArguments, check_arguments, check_payload_size
from arqscale.core.settings import RedisSettings
from arqscale.core.spec import QueueSpec, arq_queue

# How long a job payload outlives its scheduled time. arq uses one day and then drops the job; a
# queue that stays unattended over a weekend must not lose work, so keep payloads for two weeks.
PAYLOAD_TTL_MS = 14 * 86_400_000

# One call enqueues a batch of jobs of one queue (``Producer.enqueue_many``; a lone job is a batch of one): the
# script's fixed cost (its prelude, KEYS and ARGV, the clock, the totals) is paid once per call, not per job (a
# pipeline of one script per job cost Redis ~173,000 instructions a job, bench/redis_instructions.py --split).
# KEYS: queue, the queue's group prefix, events stream, totals hash. Per-job keys (payload, result, stored key,
#       callback) come from the ids (``LuaTemplate``: the queue's hash tag in the cluster layout).
# ARGV: per-key concurrency, per-key rate max, per-key rate interval ms, lease ms (all 0 without limits), events
#       max len (0 = none), then per job ENQUEUE_PER_JOB fields: id, payload, band offset ms, delay ms, ttl ms,
#       the job's key ('' = none), store it (1: given at enqueue; 0: the pickup derives it from a kwarg), function name,
#       callback URL ('' = none; stored with the payload's TTL, read by the webhook deliverer).
# Per job, in order (a later job of the batch sees an earlier one's writes: the same id twice is one job): writes
# its `waiting` (or `delayed`) event. The payload's try field, 0 (``job_payload``), tells the pickup that an event
# announced the job (a plain arq producer's payload has None there; the pickup writes its `waiting`). The score is
# Redis' clock plus the delay, in the job's band: a producer whose clock runs ahead must not make its jobs look
# deferred to every worker (docs/design.md, "Redis keeps the time"). A ready job whose key is at its limit goes
# straight into the key's waiting set: a burst of one key never sits in the queue in front of other keys
# (docs/design.md, "Per-key limits"). Returns per job: 1 queued, 2 held, 0 exists. The wake-up is the caller's
# (``wake_commands``, once per batch).
ENQUEUE_PER_JOB = 9
ENQUEUE_BODY = """
local conc, rate, win, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local limited = conc > 0 or rate > 0
events_to(KEYS[3], KEYS[4], ARGV[5])
local now_s = string.format('%d', now)
local out, queued, n_queued, n_new = {}, {}, 0, 0
-- Consecutive `waiting` events of one function go as batched entries (events.split_entry): `func` shared, per job
-- its id (no try), up to @PER_ENTRY@ to an entry; any other event first writes out the ones held.
local wait_fn, wait_parts, n_wait = nil, {}, 0
local function flush_waiting()
  if n_wait == 1 then
    emit('waiting', wait_parts[2], 'func', wait_fn)
  elseif n_wait > 1 and ev_on() then
    emit_packed('waiting', wait_fn, table.concat(wait_parts), n_wait, 'func')
  end
  wait_parts, n_wait = {}, 0
end
for i = 6, #ARGV, @PER_JOB@ do
  local id, band, delay, ttl, k = ARGV[i], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]
  local flag = 1
  if redis.call('EXISTS', '@JOB@' .. id, '@RESULT@' .. id) > 0 then
    flag = 0
  else
    n_new = n_new + 1
    redis.call('PSETEX', '@JOB@' .. id, ttl, ARGV[i+1])
    if ARGV[i+8] ~= '' then redis.call('PSETEX', '@CALLBACK@' .. id, ttl, ARGV[i+8]) end
    local score = now_s
    if band ~= '0' or delay ~= '0' then score = string.format('%d', tonumber(band) + now + tonumber(delay)) end
    if delay ~= '0' then
      flush_waiting()
      emit('delayed', id, 'func', ARGV[i+7], 'delay_ms', delay)
    else
      if n_wait > 0 and (wait_fn ~= ARGV[i+7] or n_wait >= @PER_ENTRY@) then flush_waiting() end
      wait_fn = ARGV[i+7]
      -- "<try> <duration> <id length> <id>" with no try and no duration: "  <length> <id>".
      wait_parts[2 * n_wait + 1], wait_parts[2 * n_wait + 2] = ' ' .. len_tail(#id), id
      n_wait = n_wait + 1
    end
    if k ~= '' and ARGV[i+6] == '1' then redis.call('PSETEX', '@GROUP@' .. id, ttl, k) end
    if k ~= '' and delay == '0' and limited then
      gbase = KEYS[2]
      local due = group_full(k, conc, rate, win, lease)
      if not due then
        -- Jobs of the key already in the queue will take the free slots: this one would only wait there.
        local pending = tonumber(redis.call('HGET', gbase .. 'pending', k) or '0')
        local busy = tonumber(redis.call('HGET', gbase .. 'running', k) or '0')
        if conc > 0 and busy + pending >= conc then
          due = now + lease
        elseif rate > 0 and redis.call('ZCARD', gbase .. 'starts:' .. k) + pending >= rate then
          due = now + win
        end
      end
      if due then
        group_hold(id, score, k, due)
        flag = 2
      else
        redis.call('HSET', gbase .. 'pend', id, k)
        redis.call('HINCRBY', gbase .. 'pending', k, 1)
      end
    end
    if flag == 1 then
      queued[n_queued + 1], queued[n_queued + 2] = score, id
      n_queued = n_queued + 2
    end
  end
  out[#out + 1] = flag
end
flush_waiting()
if n_new > 0 then tally('enqueued', n_new) end
if n_queued > 0 then
  redis.call('ZADD', KEYS[1], unpack(queued))
  -- The wake-up (once per batch: ``wake_commands``) tells the workers: the queue key's invalidation need not.
  own_change(KEYS[1])
end
return out
""".replace("@PER_JOB@", str(ENQUEUE_PER_JOB)).replace("@PER_ENTRY@", str(EVENTS_PER_ENTRY))
ENQUEUE = LuaTemplate(NOW_LUA + LEASE_LUA + ENQUEUE_BODY)
# The same script as a Redis Functions library, called by FCALL where Redis can (7.0 or later, not Cluster, an ACL
# that allows FUNCTION LOAD): the prelude's helpers are made once, not per enqueue (lua.LuaLibrary).
PRODUCER_LIBRARY = LuaLibrary("arqscale_producer", LEASE_LUA, (("enqueue", ENQUEUE_BODY),))
ENQUEUE_FUNCTION = LibraryFunction(PRODUCER_LIBRARY, "enqueue")
# Jobs per enqueue call: a bigger batch goes as several calls in one pipeline, so no single call holds Redis long.
ENQUEUE_BATCH_MAX = 200


def wake_commands(qkeys: keys.QueueKeys, *, deferred: bool) -> list[tuple[str | int, ...]]:
    """What wakes the workers after a batch of enqueues: the marker for ready jobs, so one idle worker wakes
    (``BZPOPMIN``) and its pickup adds the marker again while ready jobs remain; a deferred job is published to
    every worker instead, so each knows when to look. On Redis Cluster (no blocking wait there), a publish."""
    if qkeys.cluster or deferred:
        return [("PUBLISH", qkeys.wake, "1")]
    return [("ZADD", qkeys.marker, 0, "0")]


class GroupError(ValueError):
    """A ``group`` the queue cannot use (no per-key limits configured, or not a usable key)."""


def group_of(spec: QueueSpec, request: JobRequest) -> tuple[str, bool]:
    """The job's key and whether it must be stored (given at enqueue) or is derived again by the pickup
    from the keyword argument ``spec.group.key`` (the same rule as the pickup script's ``key_of``)."""
    if request.group is not None:
        if spec.group is None:
            raise GroupError(
                f"queue {spec.name!r} has no per-key limits (group: in its spec), so a job's group would limit nothing"
            )
        return request.group, True
    if spec.group is None or spec.group.key is None:
        return "", False
    value = request.kwargs.get(spec.group.key)
    if isinstance(value, bool) or value is None:
        return "", False
    if isinstance(value, str):
        return value, False
    if isinstance(value, int) and abs(value) < 2**53:
        return str(value), False
    return "", False  # floats and other values: the pickup decides (it never holds a job it cannot key)


def job_payload(
    function: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    enqueue_ms: int,
    dumps: Callable[[dict[str, Any]], bytes],
    trace_headers: Mapping[str, str] | None = None,
) -> bytes:
    """arq's payload; with tracing on, plus the trace context under ``tracing.PAYLOAD_KEY`` (arq ignores
    keys it does not know, so arq's own readers are unaffected). Its try field is 0 where arq's own
    ``enqueue_job`` writes None (arq ignores a 0): the pickup reads it as "an event announced this job"
    (``ANNOUNCED_MARKS``), so no per-job key has to say so."""
    if not trace_headers:
        return serialize_job(function, args, kwargs, 0, enqueue_ms, serializer=dumps)
    data = {"t": 0, "f": function, "a": args, "k": kwargs, "et": enqueue_ms}
    data[tracing.PAYLOAD_KEY] = dict(trace_headers)
    try:
        return dumps(data)
    except Exception as exc:  # the same error as arq's serialize_job
        raise SerializationError(f'unable to serialize job "{function}"') from exc


class CallbackError(ValueError):
    """A ``callback_url`` on a queue that allows none (no ``webhooks.callbacks`` in its spec)."""


def callback_of(spec: QueueSpec, request: JobRequest) -> str:
    if request.callback_url is None:
        return ""
    if spec.webhooks is None or spec.webhooks.callbacks is None:
        raise CallbackError(
            f"queue {spec.name!r} allows no callback URLs (webhooks.callbacks in its spec): nothing would deliver it"
        )
    return request.callback_url


class UnknownFunctionError(ValueError):
    def __init__(self, function: str, spec: QueueSpec) -> None:
        super().__init__(
            f"queue {spec.name!r} has no function {function!r}; it runs: {', '.join(sorted(spec.function_names))}"
        )
        self.function = function


class NotReplicated(RuntimeError):
    """A durable enqueue (``wait_replicas``) whose jobs the primary holds but fewer replicas acknowledged
    within the timeout. The jobs are enqueued and will run unless the primary fails before it copies
    them; enqueueing again with the same job ids is safe (an existing id is not enqueued twice)."""

    def __init__(self, results: list[EnqueueResult], acknowledged: int, wanted: int, timeout_ms: int) -> None:
        self.results, self.acknowledged, self.wanted, self.timeout_ms = results, acknowledged, wanted, timeout_ms
        ids = ", ".join(r.job_id for r in results[:5]) + (f" and {len(results) - 5} more" if len(results) > 5 else "")
        super().__init__(
            f"job(s) {ids} enqueued on the primary, but {acknowledged} of the {wanted} replica(s) asked for "
            f"(REDIS_WAIT_REPLICAS) acknowledged them within {timeout_ms} ms: a failover now could lose them; "
            "enqueueing again with the same job id is safe"
        )


class Producer:
    """Enqueues jobs onto the queues it knows. Cheap to create; share one per process.

    ``wait_replicas``: durable enqueue. After writing, ``WAIT`` until that many replicas hold the jobs
    (at most ``wait_timeout_ms``); fewer raise ``NotReplicated``. Replication is asynchronous, so
    without it a job the primary acknowledged can be lost if the primary dies before copying it.

    ``batched``: send the enqueues of concurrent callers made in the same turn of the event loop together
    (``lua.CallBatcher``): one socket write and one read for all of them. For servers enqueueing on behalf
    of many concurrent requests (the HTTP API); durable enqueues are never batched (each waits on its own)."""

    def __init__(
        self,
        redis: Redis,
        specs: Mapping[str, QueueSpec],
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        batched: bool = False,
    ) -> None:
        self.redis = redis
        # Not on Redis Cluster: calls there go to their queue's shard through redis-py's cluster pipeline.
        self._batcher = CallBatcher(redis) if batched and not wait_replicas and not keys.is_cluster(redis) else None
        self.specs = dict(specs)
        # Every enqueue path (API, CLI, Python) comes through here, so the limit holds for all of them.
        self.max_payload_bytes = max_payload_bytes
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        # Enqueues go by FCALL once PRODUCER_LIBRARY is loaded; a cluster client keeps EVALSHA. A call that meets a
        # missing function loads the library again itself (lua.run_scripts).
        self._library = LibraryUse(PRODUCER_LIBRARY, redis, possible=not keys.is_cluster(redis))

    async def _enqueue_script(self, qkeys: keys.QueueKeys) -> LuaScript | LibraryFunction:
        """What an enqueue calls: the library's function where it is loaded, else the script."""
        return ENQUEUE_FUNCTION if not qkeys.cluster and await self._library.ready() else ENQUEUE.for_keys(qkeys)

    @classmethod
    def from_settings(cls, redis: Redis, specs: Mapping[str, QueueSpec], settings: RedisSettings) -> Producer:
        """With the durability asked for in the settings (``REDIS_WAIT_REPLICAS``, ``REDIS_WAIT_TIMEOUT_MS``)."""
        return cls(redis, specs, wait_replicas=settings.wait_replicas, wait_timeout_ms=settings.wait_timeout_ms)

    def spec(self, queue: str) -> QueueSpec:
        return arq_queue(self.specs, queue)

    async def enqueue(
        self,
        queue: str,
        function: str,
        *args: Any,
        job_id: str | None = None,
        defer_seconds: float | None = None,
        priority: int | None = None,
        group: str | None = None,
        callback_url: str | None = None,
        **kwargs: Any,
    ) -> EnqueueResult:
        """Enqueue one job. The same ``job_id`` twice is one job: the second call returns ``created=False``.

        ``group``: the job's key for the queue's per-key limits (a user, tenant or account id); without it
        the key comes from the keyword argument named in the queue's ``group.key``, if any.
        ``callback_url``: gets this job's events as signed webhooks (queues with ``webhooks.callbacks``)."""
        request = JobRequest(
            function=function,
            args=list(args),
            kwargs=kwargs,
            job_id=job_id,
            defer_seconds=defer_seconds,
            priority=priority,
            group=group,
            callback_url=callback_url,
        )
        return (await self.enqueue_many(queue, [request]))[0]

    async def enqueue_many(self, queue: str, requests: Sequence[JobRequest]) -> list[EnqueueResult]:
        """Enqueue many jobs in one pipelined round trip. Validates them all before writing any."""
        spec = self.spec(queue)
        with tracing.send_spans(spec.name, len(requests)) as spans:
            return await self._enqueue_many(spec, requests, spans)

    async def _enqueue_many(
        self, spec: QueueSpec, requests: Sequence[JobRequest], spans: tracing.SendSpans | None
    ) -> list[EnqueueResult]:
        qkeys = keys.QueueKeys.of(spec, self.redis)
        dumps, _ = serializers.for_queue(spec.serializer)
        now_ms = scores.now_ms()
        prepared = []
        for req in requests:
            if req.function not in spec.function_names:
                raise UnknownFunctionError(req.function, spec)
            priority = scores.check_priority(req.priority, spec)
            job_id = req.job_id or uuid.uuid4().hex
            try:
                # Refused here rather than accepted and left to break a worker or a reader later.
                check_arguments(req.args, req.kwargs)
            except UnsafeArguments as exc:
                raise UnsafeArguments(exc.field, exc.reason, job_id) from None
            headers = spans.headers_for(job_id, req.function) if spans is not None else None
            try:
                payload = job_payload(req.function, tuple(req.args), req.kwargs, now_ms, dumps, headers)
            except Exception as exc:  # arq wraps the serializer's error; name the job and the cause
                raise ValueError(f"job {job_id}: arguments cannot be serialized: {exc.__cause__ or exc}") from None
            try:
                check_payload_size(payload, self.max_payload_bytes)
            except UnsafeArguments as exc:
                raise UnsafeArguments(exc.field, exc.reason, job_id) from None
            delay_ms = int((req.defer_seconds or 0) * 1000)
            ttl = delay_ms + PAYLOAD_TTL_MS
            state = JobState.DEFERRED if delay_ms > 0 else JobState.QUEUED
            group, store = group_of(spec, req)
            callback = callback_of(spec, req)
            placement = (scores.band_offset(priority, spec), delay_ms)
            prepared.append((job_id, payload, placement, ttl, state, group, store, req.function, callback))
        limits = spec.group
        rate = limits.rate_limit if limits else None
        group_args = [
            limits.concurrency or 0 if limits else 0,
            rate.max_jobs if rate else 0,
            rate.interval_ms if rate else 0,
            int(spec.lease_seconds * 1000),
        ]
        # One wake-up for the whole batch, after its scripts (each script would publish its own: every worker
        # reads and answers each message, a fifth of a busy worker's time at 5,000 jobs/s, bench/end_to_end.py).
        # WAIT rides in the same pipeline: it counts the writes of its own connection only.
        wake = wake_commands(qkeys, deferred=any(p[4] is JobState.DEFERRED for p in prepared))
        then: list[tuple[str | int, ...]] = list(wake)
        if self.wait_replicas:
            then.append(("WAIT", self.wait_replicas, self.wait_timeout_ms))
        # The script refuses an id that exists, so running it again after NOSCRIPT enqueues nothing twice.
        fixed_keys = [qkeys.queue, qkeys.groups, qkeys.events, qkeys.totals]
        fixed_args = [*group_args, spec.events.stream_max]
        calls: list[Call] = []
        script = await self._enqueue_script(qkeys)
        for at in range(0, len(prepared), ENQUEUE_BATCH_MAX):
            args: list[bytes | str | int] = list(fixed_args)
            for job_id, payload, placement, ttl, _, group, store, function, callback in prepared[
                at : at + ENQUEUE_BATCH_MAX
            ]:
                args += [job_id, payload, *placement, ttl, group, int(store), function, callback]
            calls.append((script, fixed_keys, args))
        if self._batcher is not None:
            # No WAIT here (durable enqueues are not batched); the wake-up goes once per batch of callers.
            replies = await self._batcher.run(calls, wake=wake)
        else:
            replies = await run_scripts(self.redis, calls, then)
        created = [flag for reply in replies[: len(calls)] for flag in reply]
        results = [
            EnqueueResult(job_id=job_id, queue=spec.name, status=state, created=bool(flag))
            for (job_id, _, _, _, state, _, _, _, _), flag in zip(prepared, created, strict=True)
        ]
        if self.wait_replicas and int(replies[-1]) < self.wait_replicas:
            raise NotReplicated(results, int(replies[-1]), self.wait_replicas, self.wait_timeout_ms)
        return results

    async def cancel(self, job_id: str, queue: str | None = None) -> CancelOutcome:
        """Cancel a job: a waiting or delayed one never runs; a running one is stopped by its worker
        (``CANCELLING``; it ends ``cancelled``). ``queue`` saves a lookup when known."""
        if queue is None:
            found = (await JobStatusReader(self.redis, self.specs).read(job_id)).queue
            if found is None or found not in self.specs:
                return CancelOutcome.NOT_FOUND
            queue = found
        return await cancellation.cancel(self.redis, self.spec(queue), job_id)

    def events(self, queue: str, *, after: str | None = None, job: str | None = None) -> Events:
        """A live tail of the queue's job events (``async for event in producer.events("email")``): only new
        ones, or those after the stream id ``after`` (``"0-0"``: every kept one); ``job``: that job's only."""
        return Events(self.redis, self.spec(queue).name, after=after, job=job)

    async def wait(self, job_id: str, timeout: float | None = None, *, queue: str | None = None) -> Any:  # noqa: ASYNC109 (arq's Job.result(timeout=) shape)
        """Wait for the job to end: its result, or ``JobFailed`` (dead), ``JobCancelled``, ``WaitTimeout``.
        ``queue`` saves a lookup when known. A job that is not found (yet) is waited for on ``queue``; without
        ``queue`` it raises ``LookupError``."""
        if queue is None:
            found = (await JobStatusReader(self.redis, self.specs).read(job_id)).queue
            if found is None or found not in self.specs:
                raise LookupError(f"job {job_id!r} not found in any queue; name its queue")
            queue = found
        return await event_stream.wait(self.redis, self.spec(queue), job_id, timeout)
