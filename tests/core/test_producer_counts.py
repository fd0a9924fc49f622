"""Producer and exact counts against a real redis-server."""

from __future__ import annotations

import time

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from arqscale.core import scores
from arqscale.core.counts import CountsReader
from arqscale.core.keys import QueueKeys
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer, UnknownFunctionError
from arqscale.core.spec import UnknownQueueError, parse_queues

SPECS = parse_queues(
    {
        "queues": {
            "email": {"functions": ["tests.tasks.send_email"], "priority_levels": 3},
            "bull": {"backend": "bullmq"},
        }
    }
)


async def test_enqueue_is_idempotent_and_counted(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    first = await producer.enqueue("email", "send_email", "a@example.com", job_id="welcome-1")
    again = await producer.enqueue("email", "send_email", "a@example.com", job_id="welcome-1")
    assert first.created and not again.created
    assert await redis.zcard("arq:queue:email") == 1
    counts = (await CountsReader(redis).read(SPECS))["email"]
    assert (counts.waiting, counts.delayed, counts.active) == (1, 0, 0)


async def test_counts_tell_waiting_running_and_deferred_apart(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    for i in range(5):
        await producer.enqueue("email", "send_email", i, job_id=f"w{i}")
    await producer.enqueue("email", "send_email", job_id="later", defer_seconds=60)
    await producer.enqueue("email", "send_email", job_id="urgent-later", defer_seconds=60, priority=0)
    await producer.enqueue("email", "send_email", job_id="low", priority=2)
    # Two jobs "running": a live lease in the active set. One dead lease (crashed worker) counts as waiting.
    now = round(time.time() * 1000)  # after enqueueing: every job enqueued so far is ready at `now`
    k = QueueKeys.for_queue("email", "arq:queue:email")
    await redis.zadd(k.active, {"w0": now + 10_000, "w1": now + 10_000, "w2": now - 1})
    counts = (await CountsReader(redis).read(SPECS, now_ms=now))["email"]
    assert counts.active == 2
    assert counts.delayed == 2
    assert counts.waiting == 4  # w2, w3, w4, low
    assert counts.backlog == 6
    # What a ZCARD-based scaler sees: every job, running and deferred ones included.
    assert await redis.zcard(k.queue) == 8


async def test_priority_bands_order_pickup(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    await producer.enqueue("email", "send_email", job_id="normal")
    await producer.enqueue("email", "send_email", job_id="low", priority=2)
    await producer.enqueue("email", "send_email", job_id="high", priority=0)
    ordered = [m.decode() for m in await redis.zrange("arq:queue:email", 0, -1)]
    assert ordered == ["high", "normal", "low"]
    spec = SPECS["email"]
    score = await redis.zscore("arq:queue:email", "high")
    assert score is not None
    assert scores.split_score(score, spec)[0] == 0


async def test_oldest_waiting_age_skips_running_jobs(redis: Redis) -> None:
    now = round(time.time() * 1000)
    k = QueueKeys.for_queue("email", "arq:queue:email")
    await redis.zadd(k.queue, {"old-running": now - 9000, "old-waiting": now - 4000, "new": now - 1000})
    await redis.zadd(k.active, {"old-running": now + 10_000})
    counts = (await CountsReader(redis).read(SPECS, now_ms=now))["email"]
    assert counts.oldest_waiting_seconds == pytest.approx(4.0)


async def test_paused_queue_reports_paused_not_waiting(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    await producer.enqueue("email", "send_email")
    await redis.set(QueueKeys.for_queue("email", "arq:queue:email").paused, "1")
    counts = (await CountsReader(redis).read(SPECS))["email"]
    assert (counts.waiting, counts.paused, counts.is_paused) == (0, 1, True)


async def test_plain_arq_producer_job_is_counted(redis: Redis, redis_url: str) -> None:
    arq = ArqRedis.from_url(redis_url)
    await arq.enqueue_job("send_email", "x", _queue_name="arq:queue:email")
    await arq.aclose()
    counts = (await CountsReader(redis).read(SPECS))["email"]
    assert counts.waiting == 1


async def test_bad_enqueue_names_the_problem(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    with pytest.raises(UnknownQueueError, match="unknown queue 'nope'; known queues: email"):
        await producer.enqueue("nope", "send_email")
    with pytest.raises(UnknownFunctionError, match="has no function 'rm_rf'"):
        await producer.enqueue("email", "rm_rf")
    with pytest.raises(ValueError, match="priority 7 is out of range"):
        await producer.enqueue("email", "send_email", priority=7)
    with pytest.raises(ValueError, match="cannot be serialized"):
        await producer.enqueue("email", "send_email", object())
    assert await redis.zcard("arq:queue:email") == 0


async def test_enqueue_survives_an_emptied_script_cache(redis: Redis) -> None:
    # After a Redis restart the script cache is empty: the producer loads the script and enqueues once.
    producer = Producer(redis, SPECS)
    await producer.enqueue("email", "send_email", job_id="before")
    await redis.script_flush()
    results = await producer.enqueue_many(
        "email", [JobRequest(function="send_email", job_id=f"after-{i}") for i in range(3)]
    )
    assert [r.created for r in results] == [True, True, True]
    assert await redis.zcard("arq:queue:email") == 4
