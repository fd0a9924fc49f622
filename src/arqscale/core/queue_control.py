"""Pausing and resuming a queue.

A paused queue keeps accepting jobs; its workers simply take none (the pickup script checks the
``arqscale:<queue>:paused`` key) and its ready jobs count as ``paused`` instead of ``waiting``.
Resuming deletes the key and publishes on the queue's wake channel, so idle workers start at once
instead of at their next fallback poll.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys
from arqscale.core.spec import QueueSpec


def queue_keys(spec: QueueSpec) -> QueueKeys:
    return QueueKeys.for_queue(spec.name, spec.queue_key)


async def pause(redis: Redis, spec: QueueSpec) -> bool:
    """Pause the queue. Returns False when it was already paused (the original pause time is kept)."""
    # The value records when the pause began, for people reading Redis by hand.
    created = await redis.set(queue_keys(spec).paused, str(int(time.time() * 1000)), nx=True)
    return bool(created)


async def resume(redis: Redis, spec: QueueSpec) -> bool:
    """Resume the queue and wake its workers. Returns False when it was not paused."""
    k = queue_keys(spec)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(k.paused)
        pipe.publish(k.wake, "1")
        deleted, _ = await pipe.execute()
    return bool(deleted)


async def is_paused(redis: Redis, spec: QueueSpec) -> bool:
    return bool(await redis.exists(queue_keys(spec).paused))
