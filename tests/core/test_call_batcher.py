"""Concurrent enqueues batched into one Redis write (``lua.CallBatcher``, the API's producer): each caller
gets its own answer, errors go to the caller whose call failed, and a flushed script cache is survived."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from arqscale.core.lua import CallBatcher, LuaScript
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.spec import QueueSpec

SPECS = {"q": QueueSpec(name="q", functions=["t.m.f"])}
ECHO = LuaScript("if ARGV[1] == 'fail' then return redis.error_reply('no ' .. KEYS[1]) end return {KEYS[1], ARGV[1]}")


async def test_concurrent_enqueues_share_one_connection_and_get_their_own_results(redis: Redis) -> None:
    producer = Producer(redis, SPECS, batched=True)
    await producer.enqueue("q", "f", job_id="first")  # loads the script (NOSCRIPT is retried apart)
    before = len(await redis.client_list())
    ids = [f"job-{i}" for i in range(20)] + ["job-3"]  # one id twice: one of the two is not created
    results = await asyncio.gather(*(producer.enqueue("q", "f", i, job_id=job_id) for i, job_id in enumerate(ids)))
    assert [r.job_id for r in results] == ids
    assert sorted(r.created for r in results) == [False] + [True] * 20
    assert await redis.zcard("arq:queue:q") == 21
    # Twenty concurrent enqueues went out in the same turn of the loop: one pooled connection, not twenty.
    # (A pipeline per call would have opened one connection per concurrent call: twenty.)
    assert len(await redis.client_list()) <= before + 1


async def test_each_caller_gets_its_own_replies_or_error(redis: Redis) -> None:
    batcher = CallBatcher(redis)

    async def call(key: str, arg: str) -> list[object]:
        return await batcher.run([(ECHO, [key], [arg]), (ECHO, [key + "2"], [arg])])

    outcomes = await asyncio.gather(call("a", "x"), call("b", "fail"), call("c", "y"), return_exceptions=True)
    assert outcomes[0] == [[b"a", b"x"], [b"a2", b"x"]]
    assert isinstance(outcomes[1], ResponseError) and "no b" in str(outcomes[1])
    assert outcomes[2] == [[b"c", b"y"], [b"c2", b"y"]]
    # The connection stayed in step with its replies.
    assert await call("d", "z") == [[b"d", b"z"], [b"d2", b"z"]]


async def test_a_flushed_script_cache_is_loaded_again(redis: Redis) -> None:
    producer = Producer(redis, SPECS, batched=True)
    await producer.enqueue("q", "f", job_id="before")
    await redis.script_flush()
    results = await asyncio.gather(*(producer.enqueue("q", "f", job_id=f"after-{i}") for i in range(3)))
    assert all(r.created for r in results)
    assert await redis.zcard("arq:queue:q") == 4


async def test_batched_and_plain_producers_write_the_same_jobs(redis: Redis) -> None:
    jobs = [JobRequest(function="f", args=[1], kwargs={"k": "v"}, job_id="same", priority=None)]
    plain = await Producer(redis, SPECS).enqueue_many("q", jobs)
    payload = await redis.get("arq:job:same")
    await redis.flushall()
    batched = await Producer(redis, SPECS, batched=True).enqueue_many("q", jobs)
    assert [r.model_dump() for r in batched] == [r.model_dump() for r in plain]
    assert (await redis.get("arq:job:same") or b"")[:20] == (payload or b"")[:20]
    assert await redis.zcard("arq:queue:q") == 1


async def test_a_lost_connection_fails_every_caller_of_the_batch(redis_url: str) -> None:
    client = Redis.from_url(redis_url, retry_on_error=[])
    batcher = CallBatcher(client)
    assert await batcher.run([(ECHO, ["k"], ["v"])]) == [[b"k", b"v"]]
    await client.connection_pool.disconnect()
    await client.aclose()
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)  # nothing listens on port 1
    batcher = CallBatcher(dead)
    outcomes = await asyncio.gather(*(batcher.run([(ECHO, ["k"], ["v"])]) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) or "Connection" in type(o).__name__ for o in outcomes), outcomes
    with pytest.raises(Exception):  # noqa: B017 - any redis-py connection error
        await batcher.run([(ECHO, ["k"], ["v"])])
    await dead.aclose()


async def test_one_wake_up_per_batch(redis: Redis) -> None:
    producer = Producer(redis, SPECS, batched=True)
    await producer.enqueue("q", "f", job_id="first")  # loads the script

    async def calls() -> tuple[int, int]:
        stats = await redis.info("commandstats")
        return int(stats.get("cmdstat_zadd", {}).get("calls", 0)), int(stats.get("cmdstat_publish", {}).get("calls", 0))

    zadds, publishes = await calls()
    await asyncio.gather(*(producer.enqueue("q", "f", job_id=f"w-{i}") for i in range(10)))
    # Ten enqueues in one turn of the loop: one batch, ten scripts (a ZADD into the queue each) and one ZADD of the
    # queue's marker after them (ready jobs wake one idle worker: producer.wake_commands), no PUBLISH.
    assert await calls() == (zadds + 11, publishes)
    await producer.enqueue("q", "f", job_id="alone")
    assert await calls() == (zadds + 13, publishes)
    # A deferred job is published to every worker instead, once per batch.
    await asyncio.gather(*(producer.enqueue("q", "f", job_id=f"d-{i}", defer_seconds=60) for i in range(3)))
    assert await calls() == (zadds + 16, publishes + 1)
