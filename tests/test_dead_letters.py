"""The dead-letter store: list, show, requeue and purge, against a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import json
import time

from redis.asyncio import Redis

from arqscale import keys
from arqscale.dead_letters import DeadLetters, RequeueOutcome
from arqscale.job_status import JobStatusReader
from arqscale.models import JobState
from arqscale.producer import Producer
from arqscale.spec import parse_queues
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
    await bury(redis, SPEC, job_id, error=f"ProviderError: {job_id} rejected")


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
    assert await redis.get(keys.retry_key("doc-a")) is None
    assert await redis.get(keys.error_key("doc-a")) is None
    assert await store.get("doc-a") is None and await store.count() == 0
    status = await JobStatusReader(redis, SPECS).read("doc-a")
    assert (status.state, status.priority, status.attempts) == (JobState.QUEUED, 0, 0)
    # Requeueing again finds nothing.
    assert await store.requeue("doc-a") is RequeueOutcome.NOT_FOUND


async def test_requeue_refuses_when_a_live_job_holds_the_id(redis: Redis) -> None:
    await _dead(redis, "dup")
    await Producer(redis, SPECS).enqueue("verification", "verify_document", job_id="dup")
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
