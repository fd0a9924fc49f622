"""Redis commands packed once (``lua.PreparedCalls``, ``counts.PreparedCounts``): the same answers as the
pipelined path, kept in step with the connection after errors, and scripts loaded again after a flush."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arqscale.core import event_stream, events
from arqscale.core.counts import CountsReader, PreparedCounts
from arqscale.core.lua import LuaScript, PreparedCalls, pack
from arqscale.core.producer import Producer
from arqscale.core.spec import QueueSpec

SPECS = {name: QueueSpec(name=name, functions=["t.m.f"]) for name in ("a", "b.x", "c")}
ECHO = LuaScript("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
FAIL = LuaScript("return redis.error_reply('boom')")


def test_pack_matches_redis_py() -> None:
    command = ("EVALSHA", "abc", 2, "k€y", b"\x00raw", 12, -3, 1.5, 0.1)
    assert pack([command]) == b"".join(Connection().pack_command(*command))
    with pytest.raises(TypeError):
        pack([("SET", "k", None)])  # type: ignore[list-item]


async def test_replies_in_order_and_scripts_loaded_again_after_a_flush(redis: Redis) -> None:
    await redis.hset("h", mapping={"x": "1"})
    calls = PreparedCalls([(ECHO, ["k1"], ["v", 41])], [("HMGET", "h", "x", "y")])
    assert await calls.run(redis) == [[b"k1", b"v", 42], [b"1", None]]
    await redis.script_flush()  # Redis restarted or flushed its scripts: NOSCRIPT, then loaded and run once
    assert await calls.run(redis) == [[b"k1", b"v", 42], [b"1", None]]


async def test_an_error_reply_raises_and_leaves_the_connection_in_step(redis: Redis) -> None:
    failing = PreparedCalls([(FAIL, [], [])], [("PING",)])
    with pytest.raises(ResponseError, match="boom"):
        await failing.run(redis)
    # The PING's reply was read too: the next caller on the pooled connection gets its own replies.
    assert await redis.get("missing") is None
    assert await PreparedCalls([(ECHO, ["k"], ["v", 1])]).run(redis) == [[b"k", b"v", 2]]


def test_totals_from_hmget_read_as_the_whole_hash() -> None:
    raw = {b"enqueued": b"5", b"run_ms": b"1.5e3", b"failed": b"x"}
    fields = [raw.get(name.encode()) for name in events.TOTAL_FIELDS]
    assert events.parse_totals_fields(fields) == events.parse_totals(raw)
    plain = [b"1", b"2", None, b"4", None, None, None, None, b"9"]
    assert events.parse_totals_fields(plain) == events.parse_totals(
        {name: v for name, v in zip(events.TOTAL_FIELDS, plain, strict=True) if v is not None}
    )
    with pytest.raises(ValueError):
        events.parse_totals_fields([b"1"])


async def test_prepared_counts_match_the_pipelined_reader(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    for i in range(3):
        await producer.enqueue("a", "f", i)
    await producer.enqueue("c", "f", defer_seconds=60)
    prepared = PreparedCounts(SPECS)
    now = 1_900_000_000_000
    counts, raw, totals = await prepared.read(redis, now)
    expected, expected_raw = await CountsReader(redis).read_detailed(SPECS, now)
    assert list(counts) == list(SPECS)
    # Every count but the oldest job's age, which is Redis' clock at each read.
    skip = {"oldest_waiting_seconds"}
    assert {n: c.model_dump(exclude=skip) for n, c in counts.items()} == {
        n: c.model_dump(exclude=skip) for n, c in expected.items()
    }
    assert counts["a"].oldest_waiting_seconds >= 0
    assert raw == expected_raw == {}
    assert totals == await event_stream.read_totals(redis, list(SPECS))
    assert totals["a"]["enqueued"] == 3 and totals["b.x"]["enqueued"] == 0


SLOW = LuaScript(
    "local t = redis.call('TIME') repeat local n = redis.call('TIME') "
    "until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 300000 return 1"
)


async def test_a_reply_that_times_out_drops_the_connection_not_the_next_callers_replies(
    redis: Redis, redis_url: str
) -> None:
    await redis.script_load(SLOW.source)
    client = Redis.from_url(redis_url, socket_timeout=0.05)
    try:
        with pytest.raises(RedisTimeoutError):
            await PreparedCalls([(SLOW, [], [])], [("PING",)]).run(client)
        await redis.ping()  # answered once the slow script is done: Redis is free again
        # The late replies of the slow call went with the dropped connection: this call reads its own.
        assert await PreparedCalls([(ECHO, ["k"], ["v", 1])], [("ECHO", "x")]).run(client) == [[b"k", b"v", 2], b"x"]
    finally:
        await client.aclose()
