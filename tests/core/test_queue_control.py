"""Pausing and resuming a queue, against a real redis-server."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from arqscale.core import queue_control
from arqscale.core.counts import CountsReader
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues

SPECS = parse_queues({"queues": {"email": {"functions": ["tests.tasks.send_email"]}}})
EMAIL = SPECS["email"]


async def test_pause_moves_ready_jobs_from_waiting_to_paused(redis: Redis) -> None:
    await Producer(redis, SPECS).enqueue("email", "send_email", job_id="j1")
    assert await queue_control.pause(redis, EMAIL) is True
    assert await queue_control.pause(redis, EMAIL) is False  # already paused
    assert await queue_control.is_paused(redis, EMAIL)
    counts = (await CountsReader(redis).read(SPECS))["email"]
    assert (counts.waiting, counts.paused, counts.is_paused) == (0, 1, True)

    assert await queue_control.resume(redis, EMAIL) is True
    assert await queue_control.resume(redis, EMAIL) is False
    counts = (await CountsReader(redis).read(SPECS))["email"]
    assert (counts.waiting, counts.paused, counts.is_paused) == (1, 0, False)


async def test_resume_wakes_idle_workers(redis: Redis) -> None:
    await queue_control.pause(redis, EMAIL)
    pubsub = redis.pubsub()
    await pubsub.subscribe("arqscale:email:wake")
    assert (await pubsub.get_message(timeout=1))["type"] == "subscribe"  # type: ignore[index]
    await queue_control.resume(redis, EMAIL)
    message = None
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            break
        await asyncio.sleep(0)
    await pubsub.aclose()
    assert message is not None and message["channel"] == b"arqscale:email:wake"
