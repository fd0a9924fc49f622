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
from protocol_steps import pick_up

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
    # Two jobs running (a live lease), one whose worker crashed (its lease ran out): that one counts as waiting.
    spec = SPECS["email"]
    for job_id in ("w0", "w1"):
        await pick_up(redis, spec, job_id)
    await pick_up(redis, spec, "w2", lease_ms=-1)
    counts = (await CountsReader(redis).read(SPECS))["email"]
    assert counts.active == 2
    assert counts.delayed == 2
    assert counts.waiting == 4  # w2, w3, w4, low
    assert counts.backlog == 6
    # What a ZCARD-based scaler sees: every job, running and deferred ones included.
    assert await redis.zcard(spec.queue_key) == 8


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
    await pick_up(redis, SPECS["email"], "old-running")
    counts = (await CountsReader(redis).read(SPECS))["email"]
    assert counts.oldest_waiting_seconds == pytest.approx(4.0, abs=0.5)


async def test_oldest_waiting_age_counts_a_crashed_workers_job(redis: Redis) -> None:
    now = round(time.time() * 1000)
    k = QueueKeys.for_queue("email", "arq:queue:email")
    await redis.zadd(k.queue, {"stalled": now - 9000, "new": now - 1000})
    await pick_up(redis, SPECS["email"], "stalled", lease_ms=-1)  # its lease ran out: waiting again
    counts = (await CountsReader(redis).read(SPECS))["email"]
    assert (counts.waiting, counts.active) == (2, 0)
    assert counts.oldest_waiting_seconds == pytest.approx(9.0, abs=0.5)


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
