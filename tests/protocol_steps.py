"""The worker protocol's Redis writes (docs/design.md, "Job life cycle"), done by hand.

The API, status and dead-letter tests need jobs in every state without depending on the timing of a
real worker; these helpers write exactly what the design says a worker writes at each step.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from arq.jobs import serialize_result
from arq.worker import JobExecutionFailed
from redis.asyncio import Redis

from arqscale.core import keys, scores, serializers
from arqscale.core.models import DeadJob
from arqscale.core.spec import QueueSpec


def now_ms() -> int:
    return round(time.time() * 1000)


def qkeys(spec: QueueSpec) -> keys.QueueKeys:
    return keys.QueueKeys.for_queue(spec.name, spec.queue_key)


async def pick_up(redis: Redis, spec: QueueSpec, job_id: str, worker: str = "w1", lease_ms: int = 10_000) -> str:
    """Take ``job_id`` as the pickup script takes a job; returns the token that holds it."""
    score = await redis.zscore(spec.queue_key, job_id)
    assert score is not None, f"{job_id} is not queued"
    token = f"{worker}.1"
    job_try = int(await redis.get(keys.retry_key(job_id)) or 0) + 1
    async with redis.pipeline(transaction=True) as pipe:
        # Parked under its lease, as the script does; its own score and the try it runs are in its ownership
        # record (the try counter keeps the tries before it).
        pipe.zadd(spec.queue_key, {job_id: scores.LEASED + now_ms() + lease_ms})
        pipe.set(keys.in_progress_key(job_id), f"{int(score)} {job_try} {token}")
        await pipe.execute()
    return token


async def queue_score(redis: Redis, spec: QueueSpec, job_id: str) -> float | None:
    """The job's own queue score (a running job is parked under its lease, its own score in its record)."""
    score = await redis.zscore(spec.queue_key, job_id)
    if score is not None and scores.lease_of(score) is not None:
        return keys.record_score(await redis.get(keys.in_progress_key(job_id)))
    return None if score is None else scores.unpark(score)


async def fail_with_retry(redis: Redis, spec: QueueSpec, job_id: str, error: str, backoff_ms: int = 60_000) -> None:
    score = await queue_score(redis, spec, job_id)
    assert score is not None
    await redis.zadd(spec.queue_key, {job_id: score + backoff_ms})
    tries = keys.running_try(await redis.get(keys.in_progress_key(job_id))) or 1
    await redis.delete(keys.in_progress_key(job_id))
    await redis.set(keys.retry_key(job_id), tries)  # the try that failed counts
    await redis.set(keys.error_key(job_id), json.dumps({"error": error, "attempt": tries, "at": time.time()}))


async def finish(
    redis: Redis, spec: QueueSpec, job_id: str, *, success: bool, result: Any, serializer: str = "json"
) -> None:
    payload = await redis.get(keys.job_key(job_id))
    assert payload is not None
    dumps, loads = serializers.for_queue("pickle" if serializer == "pickle" else "json")
    job = loads(payload)
    start = now_ms() - 50
    raw = serialize_result(
        job["f"],
        job["a"],
        job["k"],
        1,
        job["et"],
        success,
        result,
        start,
        now_ms(),
        "ref",
        spec.queue_key,
        job_id,
        serializer=dumps,
    )
    assert raw is not None
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.result_key(job_id), raw)
        pipe.delete(keys.job_key(job_id), keys.in_progress_key(job_id), keys.retry_key(job_id))
        pipe.zrem(spec.queue_key, job_id)
        pipe.zadd(qkeys(spec).completed, {job_id: now_ms()})
        await pipe.execute()


def _failed_result(spec: QueueSpec, job_id: str, decoded: dict[str, Any] | None, error: str) -> bytes:
    dumps, _ = serializers.for_queue(spec.serializer)
    failure: Any = error if spec.serializer == "json" else JobExecutionFailed(error)
    d = decoded or {"f": "<unknown>", "a": [], "k": {}, "et": 0}
    raw = serialize_result(
        d["f"], d["a"], d["k"], spec.max_tries, d["et"], False, failure, now_ms(), now_ms(), "ref", spec.queue_key,
        job_id, serializer=dumps,
    )  # fmt: skip
    assert raw is not None
    return raw


async def bury(
    redis: Redis, spec: QueueSpec, job_id: str, error: str = "ValueError: provider said no", *, result: bool = False
) -> DeadJob:
    """Move a job to the dead-letter store as the worker does after its last try.

    ``result=True`` also writes arq's failed result, as workers do now; without it the id stays free for a
    new job (as once the result has expired after ``retention.failed_seconds``).
    """
    payload = await redis.get(keys.job_key(job_id))
    decoded = serializers.json_loads(payload) if payload and spec.serializer == "json" else None
    score = await queue_score(redis, spec, job_id)
    priority = scores.split_score(score, spec)[0] if score is not None else spec.normal_priority
    entry = DeadJob(
        job_id=job_id,
        queue=spec.name,
        function=decoded["f"] if decoded else None,
        args=decoded["a"] if decoded else None,
        kwargs=decoded["k"] if decoded else None,
        attempts=spec.max_tries,
        error=error,
        traceback="Traceback (most recent call last):\n  ...\n" + error,
        enqueued_at=decoded["et"] / 1000 if decoded else None,
        failed_at=time.time(),
        priority=priority,
        payload_b64=base64.b64encode(payload).decode() if payload is not None else None,
    )
    k = qkeys(spec)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(k.dlq, job_id, entry.model_dump_json())
        pipe.zadd(k.dlq_index, {job_id: now_ms()})
        if result:
            pipe.set(keys.result_key(job_id), _failed_result(spec, job_id, decoded, error), px=60_000)
        pipe.delete(keys.job_key(job_id), keys.in_progress_key(job_id), keys.retry_key(job_id))
        pipe.zrem(spec.queue_key, job_id)
        await pipe.execute()
    return entry
