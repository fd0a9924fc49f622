"""The worker's scripts as a Redis Functions library (``pickup.WORKER_LIBRARY``, called by ``FCALL``), and the
``EVALSHA`` path it falls back to where Redis cannot or may not load one. Real redis-server throughout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from test_worker import make_spec, running, wait_for

from arqscale.core.keys import OWN_CHANGE_SUFFIX
from arqscale.core.lua import LEASE_LUA, PRELUDE_CACHES, prelude_state
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.worker import outcomes
from arqscale.worker.loop import Worker
from arqscale.worker.pickup import _LIBRARY_BODIES, WORKER_LIBRARY, Finish, QueueOps, _worker_text
from redis_server import RedisServer


async def _calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def _libraries(redis: Redis) -> set[str]:
    listed = await redis.execute_command("FUNCTION", "LIST")  # type: ignore[no-untyped-call]
    return {(entry[1] if isinstance(entry, list) else entry[b"library_name"]).decode() for entry in listed}


async def _run_jobs(redis: Redis, worker_redis: Redis, prefix: str, n: int) -> None:
    """``n`` jobs enqueued and run through ``worker_redis``'s connection, checked through ``redis``'s."""
    spec = make_spec()
    producer = Producer(worker_redis, {"q": spec})
    async with running(Worker(spec, worker_redis)):
        await producer.enqueue_many(
            "q", [JobRequest(function="add", args=[i, 1], job_id=f"{prefix}{i}") for i in range(n)]
        )
        await wait_for(lambda: _all_done(redis, prefix, n), within=10, what=f"{n} jobs done")


async def _all_done(redis: Redis, prefix: str, n: int) -> bool:
    results = await redis.exists(*(f"arq:result:{prefix}{i}" for i in range(n)))
    return int(results) == n


async def test_a_worker_calls_its_scripts_by_fcall_where_redis_has_functions(redis: Redis) -> None:
    await redis.config_resetstat()
    await _run_jobs(redis, redis, "f", 30)
    assert WORKER_LIBRARY.name in await _libraries(redis)
    assert await _calls(redis, "fcall") > 0
    # What else a worker runs by EVALSHA (schedules, counts) is not its per-job scripts.
    stats = await redis.info("commandstats")
    assert "cmdstat_evalsha" not in stats or int(stats["cmdstat_evalsha"]["calls"]) < await _calls(redis, "fcall")


async def test_jobs_finish_when_redis_loses_the_library_while_a_worker_runs(redis: Redis) -> None:
    spec = make_spec()
    producer = Producer(redis, {"q": spec})
    async with running(Worker(spec, redis)):
        await producer.enqueue_many("q", [JobRequest(function="add", args=[i, 1], job_id=f"a{i}") for i in range(10)])
        await wait_for(lambda: _all_done(redis, "a", 10), within=10, what="the first jobs done")
        await redis.execute_command("FUNCTION", "FLUSH")  # type: ignore[no-untyped-call]  # as a restart without persistence
        await producer.enqueue_many("q", [JobRequest(function="add", args=[i, 1], job_id=f"b{i}") for i in range(10)])
        await wait_for(lambda: _all_done(redis, "b", 10), within=10, what="the jobs after the flush done")
    assert WORKER_LIBRARY.name in await _libraries(redis)  # loaded again


@pytest.fixture
async def no_functions_user(redis_server: RedisServer, redis: Redis) -> AsyncIterator[Redis]:
    """A client whose ACL user may run scripts but not load or call functions."""
    await redis.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "nofn", "on", ">pw", "~*", "&*", "+@all", "-function", "-fcall", "-fcall_ro"
    )
    client = Redis.from_url(redis_server.url, username="nofn", password="pw")
    try:
        yield client
    finally:
        await client.aclose()
        await redis.execute_command("ACL", "DELUSER", "nofn")  # type: ignore[no-untyped-call]


async def test_a_user_who_may_not_load_functions_enqueues_and_runs_jobs_by_evalsha(
    redis: Redis, no_functions_user: Redis
) -> None:
    await redis.execute_command("FUNCTION", "FLUSH")  # type: ignore[no-untyped-call]
    await redis.config_resetstat()
    await _run_jobs(redis, no_functions_user, "e", 20)
    assert await _calls(redis, "fcall") == 0 and await _calls(redis, "evalsha") > 0
    assert await _libraries(redis) == set()


async def test_each_call_starts_from_a_clean_prelude_state(redis: Redis) -> None:
    # The library's helpers live across calls; their per-call state (the events' stream, `queue_added`, ...) must
    # not. A retry sets `queue_added` (the queue gained a ready job, so its invalidation must wake idle workers);
    # a pickup right after it that takes a job must still leave the own-change mark, as a call of its own does.
    spec = make_spec()
    await Producer(redis, {"q": spec}).enqueue_many("q", [JobRequest(function="add", job_id=i) for i in ("r", "s")])
    ops = QueueOps(redis, spec, "w")
    first = (await ops.pickup(1, "w.1")).jobs[0]
    assert ops._by_fcall is True
    record, _ = outcomes.retry(spec, first, 1, "boom", None, 0, defer_ms=60_000)
    assert await ops.finish([record.queued(first, 0.0)]) == []
    own_mark = spec.queue_key + OWN_CHANGE_SUFFIX
    await redis.delete(own_mark)
    assert [j.job_id for j in (await ops.pickup(1, "w.2")).jobs] == ["s"]
    assert await redis.exists(own_mark) == 1


def test_the_library_resets_every_piece_of_per_call_state() -> None:
    # A new top-level `local` in the prelude is per-call state unless it is a cache: the library resets it at the
    # start of every function (lua.LuaLibrary). This names what is reset today, so a new one is looked at.
    state = {name.strip() for names, _ in prelude_state(_worker_text(LEASE_LUA)) for name in names.split(",")}
    assert state == {"ev_stream", "ev_totals", "ev_max", "ev_max_s", "ev_now_s", "gbase", "queue_added", "grun_live"}
    assert {"num_memo", "len_memo"} == PRELUDE_CACHES
    begin = WORKER_LIBRARY.code[WORKER_LIBRARY.code.index("local function begin()") :]
    for names, values in prelude_state(_worker_text(LEASE_LUA)):
        assert f"{names} = {values}" in begin.split("local _t")[0]
    assert set(_LIBRARY_BODIES) == {"pickup", "finish", "heartbeat", "progress"}


async def test_a_library_of_another_version_is_left_alone(redis: Redis) -> None:
    # Two versions of arqscale sharing a Redis (a rolling upgrade) each load and call their own library.
    other = WORKER_LIBRARY.code.replace(WORKER_LIBRARY.name, "arqscale_worker_000000000000")
    await redis.execute_command("FUNCTION", "LOAD", "REPLACE", other)  # type: ignore[no-untyped-call]
    await _run_jobs(redis, redis, "v", 5)
    assert {WORKER_LIBRARY.name, "arqscale_worker_000000000000"} <= await _libraries(redis)


async def test_progress_and_heartbeats_go_by_fcall(redis: Redis) -> None:
    spec = make_spec()
    await Producer(redis, {"q": spec}).enqueue("q", "add", 1, 2, job_id="p")
    ops = QueueOps(redis, spec, "w")
    job = (await ops.pickup(1, "w.1")).jobs[0]
    await redis.config_resetstat()
    assert (await ops.heartbeat([(job.job_id, job.token)], 10_000)).lost == []
    await ops.progress("p", 1, '{"percent": 50}', 60_000, 50.0, "half")
    assert await _calls(redis, "fcall") == 2 and await _calls(redis, "evalsha") == 0
    assert await redis.get("arqscale:progress:p") == b'{"percent": 50}'
    await asyncio.sleep(0)
    assert await ops.finish([Finish("ok", "p", b"3").queued(job, 0.0)]) == []
