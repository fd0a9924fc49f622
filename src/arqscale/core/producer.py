"""Enqueue jobs onto arqscale queues from Python.

Jobs land in arq's own layout (``arq:job:<id>`` plus the queue's sorted set), so arq's tools can read
them; the same script also publishes on the queue's wake channel so an idle worker starts at once
instead of waiting for its next poll.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from arq.jobs import serialize_job
from redis.asyncio import Redis

from arqscale.core import cancellation, keys, scores, serializers
from arqscale.core.cancellation import CancelOutcome
from arqscale.core.job_status import JobStatusReader
from arqscale.core.lua import NOW_LUA, LuaScript, run_scripts
from arqscale.core.models import EnqueueResult, JobRequest, JobState
from arqscale.core.safe_data import MAX_PAYLOAD_BYTES, UnsafeArguments, check_arguments, check_payload_size
from arqscale.core.spec import QueueSpec, arq_queue

# How long a job payload outlives its scheduled time. arq uses one day and then drops the job; a
# queue that stays unattended over a weekend must not lose work, so keep payloads for two weeks.
PAYLOAD_TTL_MS = 14 * 86_400_000

# KEYS: job, result, queue.  ARGV: job id, payload, band offset ms, delay ms, ttl ms, wake channel.
# The score is Redis' clock plus the delay, in the job's band: a producer whose clock runs ahead must not
# make its jobs look deferred to every worker (docs/design.md, "Redis keeps the time").
ENQUEUE = LuaScript(
    NOW_LUA
    + """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[5], ARGV[2])
redis.call('ZADD', KEYS[3], string.format('%d', tonumber(ARGV[3]) + now + tonumber(ARGV[4])), ARGV[1])
redis.call('PUBLISH', ARGV[6], '1')
return 1
"""
)


class UnknownFunctionError(ValueError):
    def __init__(self, function: str, spec: QueueSpec) -> None:
        super().__init__(
            f"queue {spec.name!r} has no function {function!r}; it runs: {', '.join(sorted(spec.function_names))}"
        )
        self.function = function


class Producer:
    """Enqueues jobs onto the queues it knows. Cheap to create; share one per process."""

    def __init__(
        self, redis: Redis, specs: Mapping[str, QueueSpec], *, max_payload_bytes: int = MAX_PAYLOAD_BYTES
    ) -> None:
        self.redis = redis
        self.specs = dict(specs)
        # Every enqueue path (API, CLI, Python) comes through here, so the limit holds for all of them.
        self.max_payload_bytes = max_payload_bytes

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
        **kwargs: Any,
    ) -> EnqueueResult:
        """Enqueue one job. The same ``job_id`` twice is one job: the second call returns ``created=False``."""
        request = JobRequest(
            function=function,
            args=list(args),
            kwargs=kwargs,
            job_id=job_id,
            defer_seconds=defer_seconds,
            priority=priority,
        )
        return (await self.enqueue_many(queue, [request]))[0]

    async def enqueue_many(self, queue: str, requests: Sequence[JobRequest]) -> list[EnqueueResult]:
        """Enqueue many jobs in one pipelined round trip. Validates them all before writing any."""
        spec = self.spec(queue)
        qkeys = keys.QueueKeys.for_queue(spec.name, spec.queue_key)
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
            try:
                payload = serialize_job(req.function, tuple(req.args), req.kwargs, None, now_ms, serializer=dumps)
            except Exception as exc:  # arq wraps the serializer's error; name the job and the cause
                raise ValueError(f"job {job_id}: arguments cannot be serialized: {exc.__cause__ or exc}") from None
            try:
                check_payload_size(payload, self.max_payload_bytes)
            except UnsafeArguments as exc:
                raise UnsafeArguments(exc.field, exc.reason, job_id) from None
            delay_ms = int((req.defer_seconds or 0) * 1000)
            ttl = delay_ms + PAYLOAD_TTL_MS
            state = JobState.DEFERRED if delay_ms > 0 else JobState.QUEUED
            prepared.append((job_id, payload, (scores.band_offset(priority, spec), delay_ms), ttl, state))
        # The script refuses an id that exists, so running it again after NOSCRIPT enqueues nothing twice.
        created = await run_scripts(
            self.redis,
            [
                (
                    ENQUEUE,
                    [keys.job_key(job_id), keys.result_key(job_id), qkeys.queue],
                    [job_id, payload, *placement, ttl, qkeys.wake],
                )
                for job_id, payload, placement, ttl, _ in prepared
            ],
        )
        return [
            EnqueueResult(job_id=job_id, queue=spec.name, status=state, created=bool(flag))
            for (job_id, _, _, _, state), flag in zip(prepared, created, strict=True)
        ]

    async def cancel(self, job_id: str, queue: str | None = None) -> CancelOutcome:
        """Cancel a job: a waiting or delayed one never runs; a running one is stopped by its worker
        (``CANCELLING``; it ends ``cancelled``). ``queue`` saves a lookup when known."""
        if queue is None:
            found = (await JobStatusReader(self.redis, self.specs).read(job_id)).queue
            if found is None or found not in self.specs:
                return CancelOutcome.NOT_FOUND
            queue = found
        return await cancellation.cancel(self.redis, self.spec(queue), job_id)
