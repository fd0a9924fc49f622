"""Enqueues by ``FCALL`` (``producer.PRODUCER_LIBRARY``) where Redis has Functions, on each path a producer sends by:
one caller's pipeline (``lua.run_scripts``) and the API's batches of concurrent callers (``lua.CallBatcher``), and
again after Redis lost the library. Real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from arqscale.core.models import JobRequest
from arqscale.core.producer import PRODUCER_LIBRARY, Producer
from arqscale.core.spec import parse_queues

SPEC = parse_queues({"queues": {"q": {"functions": ["tasks.noop"]}}})["q"]


async def _calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def _queued(redis: Redis) -> int:
    return int(await redis.zcard(SPEC.queue_key))


@pytest.mark.parametrize("batched", [False, True])
async def test_enqueues_go_by_fcall_and_survive_a_lost_library(redis: Redis, batched: bool) -> None:
    producer = Producer(redis, {"q": SPEC}, batched=batched)
    await redis.config_resetstat()
    await producer.enqueue("q", "noop", job_id="a")
    await asyncio.gather(*(producer.enqueue("q", "noop", job_id=f"b{i}") for i in range(20)))
    assert await _calls(redis, "fcall") >= 2 and await _calls(redis, "evalsha") == 0
    await redis.execute_command("FUNCTION", "FLUSH")  # type: ignore[no-untyped-call]  # as a restart without persistence
    results = await asyncio.gather(*(producer.enqueue("q", "noop", job_id=f"c{i}") for i in range(20)))
    assert all(r.created for r in results) and await _queued(redis) == 41
    # Sent again after the load: an id already there is still one job.
    again = await producer.enqueue_many("q", [JobRequest(function="noop", job_id="c0"), JobRequest(function="noop")])
    assert [r.created for r in again] == [False, True] and await _queued(redis) == 42
    listed = await redis.execute_command("FUNCTION", "LIST")  # type: ignore[no-untyped-call]
    assert PRODUCER_LIBRARY.name.encode() in str(listed).encode()
