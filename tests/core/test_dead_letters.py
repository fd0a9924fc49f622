"""The dead-letter store: list, show, requeue and purge, against a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, SerializationError
from arq.worker import JobExecutionFailed
from redis.asyncio import Redis

from arqscale.core import keys, scores, serializers
from arqscale.core.dead_letters import DeadLetters, RequeueOutcome
from arqscale.core.job_status import JobStatusReader
from arqscale.core.models import JobState
from arqscale.core.producer import Producer
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.worker.loop import Worker
from protocol_steps import bury, pick_up, qkeys

SPECS = parse_queues(
    {
        "queues": {
            "verification": {"functions": ["tests.tasks.verify_document"], "max_tries": 3},
            "legacy": {"functions": ["tests.tasks.crunch"], "serializer": "pickle"},
        }
    }
)
SPEC = SPECS["verification"]


async def _dead(redis: Redis, job_id: str, *args: object, priority: int | None = None) -> None:
    await Producer(redis, SPECS).enqueue("verification", "verify_document", *args, job_id=job_id, priority=priority)
    await pick_up(redis, SPEC, job_id)
    await bury(redis, SPEC, job_id, error=f"ProviderError: {job_id} rejected", result=True)


async def test_page_lists_newest_first_with_total(redis: Redis) -> None:
    for i in range(5):
        await _dead(redis, f"doc-{i}", {"document": i})
        await asyncio.sleep(0.002)  # distinct failure times
    store = DeadLetters(redis, SPEC)
    page = await store.page(offset=0, limit=2)
    assert page.total == 5
    assert [e.job_id for e in page.items] == ["doc-4", "doc-3"]
    rest = await store.page(offset=2, limit=10)
    assert [e.job_id for e in rest.items] == ["doc-2", "doc-1", "doc-0"]
    shown = await store.get("doc-1")
    assert shown is not None and shown.args == [{"document": 1}] and shown.error == "ProviderError: doc-1 rejected"
    assert await store.get("missing") is None


async def test_requeue_restores_the_same_bytes_and_resets_tries(redis: Redis) -> None:
    await Producer(redis, SPECS).enqueue("verification", "verify_document", {"doc": "A"}, job_id="doc-a", priority=0)
    original = await redis.get(keys.job_key("doc-a"))
    await pick_up(redis, SPEC, "doc-a")
    await redis.set(keys.error_key("doc-a"), "old error")
    await bury(redis, SPEC, "doc-a")
    store = DeadLetters(redis, SPEC)

    pubsub = redis.pubsub()
    await pubsub.subscribe(qkeys(SPEC).wake)
    await pubsub.get_message(timeout=1)
    assert await store.requeue("doc-a") is RequeueOutcome.REQUEUED
    woke = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    await pubsub.aclose()
    assert woke is not None

    assert await redis.get(keys.job_key("doc-a")) == original
    # Reset to 0, not deleted: the counter also tells the pickup that an event announced the job (docs/events.md).
    assert await redis.get(keys.retry_key("doc-a")) == b"0"
    assert await redis.get(keys.error_key("doc-a")) is None
    assert await store.get("doc-a") is None and await store.count() == 0
    status = await JobStatusReader(redis, SPECS).read("doc-a")
    assert (status.state, status.priority, status.attempts) == (JobState.QUEUED, 0, 0)
    # Requeueing again finds nothing.
    assert await store.requeue("doc-a") is RequeueOutcome.NOT_FOUND


async def test_requeue_refuses_when_a_live_job_holds_the_id(redis: Redis) -> None:
    await _dead(redis, "dup")
    producer = Producer(redis, SPECS)
    # While the dead job's failed result is kept, its id is taken (as under arq)...
    assert not (await producer.enqueue("verification", "verify_document", job_id="dup")).created
    # ...once that result has expired (retention.failed_seconds), a new job may take the id again.
    await redis.delete(keys.result_key("dup"))
    assert (await producer.enqueue("verification", "verify_document", job_id="dup")).created
    store = DeadLetters(redis, SPEC)
    assert await store.requeue("dup") is RequeueOutcome.CONFLICT
    assert await store.get("dup") is not None  # nothing changed


async def test_requeue_without_payload_is_refused(redis: Redis) -> None:
    await Producer(redis, SPECS).enqueue("verification", "verify_document", job_id="lost")
    await redis.delete(keys.job_key("lost"))
    await bury(redis, SPEC, "lost", error="payload missing")
    assert await DeadLetters(redis, SPEC).requeue("lost") is RequeueOutcome.NO_PAYLOAD


async def test_pickle_payload_is_requeued_without_decoding(redis: Redis) -> None:
    spec = SPECS["legacy"]
    payload = b"\x80\x05not-really-a-pickle-but-that-is-the-point"
    k = qkeys(spec)
    entry = {
        "job_id": "p1",
        "queue": "legacy",
        "function": "crunch",
        "attempts": 5,
        "error": "boom",
        "failed_at": time.time(),
        "payload_b64": base64.b64encode(payload).decode(),
    }
    await redis.hset(k.dlq, "p1", json.dumps(entry))
    await redis.zadd(k.dlq_index, {"p1": 1})
    assert await DeadLetters(redis, spec).requeue("p1") is RequeueOutcome.REQUEUED
    assert await redis.get(keys.job_key("p1")) == payload
    assert await redis.zscore(spec.queue_key, "p1") is not None


async def test_requeue_all_and_purge(redis: Redis) -> None:
    for i in range(3):
        await _dead(redis, f"r{i}")
    store = DeadLetters(redis, SPEC)
    summary = await store.requeue_many(["r0", "zzz"])
    assert summary.requeued == ["r0"] and summary.skipped == {"zzz": RequeueOutcome.NOT_FOUND}
    summary = await store.requeue_many()
    assert sorted(summary.requeued) == ["r1", "r2"]
    assert await redis.zcard(SPEC.queue_key) == 3

    for i in range(4):
        await _dead(redis, f"p{i}")
    assert await store.purge(["p0", "nope"]) == 1
    assert await store.purge(older_than_seconds=3600) == 0  # all failed just now
    await redis.zadd(qkeys(SPEC).dlq_index, {"p1": 1000})  # failed long ago
    assert await store.purge(older_than_seconds=3600) == 1
    assert await store.get("p1") is None
    assert await store.purge() == 2
    assert await store.count() == 0 and not await redis.exists(qkeys(SPEC).dlq)


async def test_purge_older_than_zero_takes_an_entry_that_died_this_millisecond(redis: Redis) -> None:
    # The index is dated by Redis' clock (the finish script's TIME): the purge reads the same clock, and its bound
    # includes the millisecond it names, so nothing that died before the call is spared by a clock that lags.
    for i in range(20):
        await _dead(redis, f"now{i}")
        assert await DeadLetters(redis, SPEC).purge(older_than_seconds=0) == 1
    seconds, micros = await redis.time()
    await redis.zadd(qkeys(SPEC).dlq_index, {"edge": scores.time_ms(seconds, micros) - 5000})
    await redis.hset(qkeys(SPEC).dlq, "edge", "{}")
    assert await DeadLetters(redis, SPEC).purge(older_than_seconds=10) == 0  # 5 s old: not older than 10 s
    assert await DeadLetters(redis, SPEC).purge(older_than_seconds=4.9) == 1


# ---- dead jobs under a real worker: arq's failed result, requeue and purge ---------------------------

WORKER_SPECS = parse_queues(
    {
        "queues": {
            name: {
                "functions": ["worker_tasks.fail_while", "worker_tasks.fail", "worker_tasks.fail_stubborn"],
                "max_tries": 2,
                "backoff": {"strategy": "fixed", "delay": 0.01, "jitter": 0},
                "lease_seconds": 1,
                "poll_interval": 0.05,
                "retention": {"failed_seconds": 600},
                **extra,
            }
            for name, extra in (("jsonq", {}), ("pickleq", {"serializer": "pickle"}))
        }
    }
)


@asynccontextmanager
async def _worker(redis: Redis, spec: QueueSpec) -> AsyncIterator[Worker]:
    worker = Worker(spec, redis)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_drain()
        await asyncio.wait_for(task, 10)


async def _until(check: Callable[[], Awaitable[Any]], what: str, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def test_dead_job_has_arqs_failed_result_until_requeued_and_then_its_value(redis: Redis, redis_url: str) -> None:
    spec = WORKER_SPECS["jsonq"]
    store = DeadLetters(redis, spec)
    producer = Producer(redis, WORKER_SPECS)
    # A plain arq client on its own connection, reading this queue's JSON results.
    arq = ArqRedis.from_url(redis_url)
    try:
        await redis.set("broken", 1)
        await producer.enqueue("jsonq", "fail_while", "broken", job_id="d1")
        job = Job("d1", arq, _queue_name=spec.queue_key, _deserializer=serializers.json_loads)
        async with _worker(redis, spec):
            # Without a result for the dead job this would wait until the timeout (arq's TimeoutError).
            with pytest.raises(SerializationError, match="ValueError: broken is set"):
                await job.result(timeout=10, poll_delay=0.05)
            entry = await store.get("d1")
            assert entry is not None and entry.attempts == 2
            info = await job.result_info()
            assert info is not None and (info.success, info.job_try, info.function) == (False, 2, "fail_while")
            assert info.args == ["broken"] and info.queue_name == spec.queue_key  # JSON: a list
            assert 0 < await redis.pttl(keys.result_key("d1")) <= 600_000
            # The job's status still says dead (the entry wins over the failed result).
            status = await JobStatusReader(redis, WORKER_SPECS).read("d1")
            assert (status.state, status.error) == (JobState.DEAD, "ValueError: broken is set")
            # The failed result holds the id, as under arq: enqueueing it again is refused.
            assert not (await producer.enqueue("jsonq", "fail_while", "broken", job_id="d1")).created

            # Fixed: requeue runs it again under the same id, and arq's client gets the value.
            await redis.delete("broken")
            assert await store.requeue("d1") is RequeueOutcome.REQUEUED
            assert await job.result(timeout=10, poll_delay=0.05) == "recovered"
        assert [r["try"] for r in [json.loads(x) for x in await redis.lrange("runs:d1", 0, -1)]] == [1, 2, 1]
        assert (await JobStatusReader(redis, WORKER_SPECS).read("d1")).state is JobState.COMPLETED
        assert await store.count() == 0
    finally:
        await arq.aclose()


async def test_purge_removes_the_failed_result_of_each_purged_entry(redis: Redis) -> None:
    spec = WORKER_SPECS["jsonq"]
    producer = Producer(redis, WORKER_SPECS)
    await redis.set("broken", 1)
    ids = [f"p{i}" for i in range(4)]
    async with _worker(redis, spec):
        for job_id in ids:
            await producer.enqueue("jsonq", "fail_while", "broken", job_id=job_id)
        for job_id in ids:
            await _until(lambda j=job_id: redis.exists(keys.result_key(j)), f"{job_id} dead")
    store = DeadLetters(redis, spec)
    assert await store.count() == 4
    assert await store.purge(["p0", "nope"]) == 1
    assert not await redis.exists(keys.result_key("p0"))
    assert await redis.exists(keys.result_key("p1"))
    await redis.zadd(qkeys(spec).dlq_index, {"p1": 1000})  # failed long ago
    assert await store.purge(older_than_seconds=3600) == 1
    assert not await redis.exists(keys.result_key("p1"))
    assert await store.purge() == 2
    assert await redis.exists(*(keys.result_key(j) for j in ids)) == 0
    status = await JobStatusReader(redis, WORKER_SPECS).read("p3")
    assert status.state is JobState.NOT_FOUND  # not lingering as "failed"
    # The id is free again.
    assert (await producer.enqueue("jsonq", "fail_while", "broken", job_id="p3")).created


async def test_purge_all_goes_in_batches_and_takes_entries_missing_from_the_index(redis: Redis) -> None:
    for i in range(3):
        await _dead(redis, f"b{i}")
    k = qkeys(SPEC)
    await redis.zrem(k.dlq_index, "b2")  # a damaged store: an entry the index lost
    for i in range(3, 1203):  # more than one batch
        await redis.zadd(k.dlq_index, {f"x{i}": i})
        await redis.hset(k.dlq, f"x{i}", "{}")
        await redis.set(keys.result_key(f"x{i}"), "r")
    assert await DeadLetters(redis, SPEC).purge() == 1203
    assert await redis.exists(k.dlq, k.dlq_index) == 0
    assert await redis.keys("arq:result:*") == []


async def test_dead_job_on_a_pickle_queue_raises_the_tasks_exception_in_arqs_client(redis: Redis) -> None:
    spec = WORKER_SPECS["pickleq"]
    arq = ArqRedis(connection_pool=redis.connection_pool)  # arq's defaults: pickle
    await arq.enqueue_job("fail", "pickled boom", _job_id="k1", _queue_name=spec.queue_key)
    await arq.enqueue_job("fail_stubborn", _job_id="k2", _queue_name=spec.queue_key)
    async with _worker(redis, spec):
        with pytest.raises(ValueError, match=r"^pickled boom$"):
            await Job("k1", redis, _queue_name=spec.queue_key).result(timeout=10, poll_delay=0.05)
        # An exception class arq's client could not rebuild comes as arq's JobExecutionFailed with the text.
        with pytest.raises(JobExecutionFailed, match=r"^StubbornError: 7: no$"):
            await Job("k2", redis, _queue_name=spec.queue_key).result(timeout=10, poll_delay=0.05)
    status = await JobStatusReader(redis, WORKER_SPECS).read("k1")
    assert (status.state, status.error) == (JobState.DEAD, "ValueError: pickled boom")
