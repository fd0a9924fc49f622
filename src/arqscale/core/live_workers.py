"""How many worker processes serve each queue right now, from their heartbeats.

Each worker keeps its id in ``arqscale:<queue>:workers`` with a heartbeat expiry (ms) as score; a
crashed worker's entry simply ages out, so counting the entries not yet expired needs no cleanup.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from arqscale.core import scores
from arqscale.core.keys import QueueKeys
from arqscale.core.spec import QueueSpec


async def live_workers(redis: Redis, specs: Mapping[str, QueueSpec], now_ms: int | None = None) -> dict[str, int]:
    """Queue name -> live worker processes, in one pipelined round trip."""
    now = scores.now_ms() if now_ms is None else now_ms
    names = [name for name, spec in specs.items() if spec.backend == "arq"]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcount(QueueKeys.for_queue(name, specs[name].queue_key).workers, f"({now}", "+inf")
        replies = await pipe.execute()
    return {name: int(n) for name, n in zip(names, replies, strict=True)}
