"""Schedules fired by real ``arqscale worker`` processes against a real redis-server: one job per tick with
several replicas, through a SIGKILLed worker and a Redis restart, and the missed-tick policies.

Completed results are not kept (``retention.completed_seconds: 0``), so a tick fired twice would find its
job id free again and run a second time: "each tick ran once" is then a real check, not the enqueue's
id guard hiding a double fire.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from arqscale.core.schedules import ScheduleKeys
from redis_server import RedisServer
from worker_processes import StartWorker, WorkerProcess, stop_all, wait_until, worker_starter

QUEUE = {
    "functions": ["worker_tasks.record"],
    "lease_seconds": 1,
    "poll_interval": 0.1,
    "job_timeout": 10,
    "retention": {"completed_seconds": 0},
}
KEYS = ScheduleKeys.for_queue("q")


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


def with_schedules(**schedules: dict[str, Any]) -> dict[str, Any]:
    return {"q": {**QUEUE, "schedules": schedules}}


async def ran_ticks(redis: Redis, name: str) -> dict[int, list[dict[str, Any]]]:
    """Tick (ms) -> the runs of its job, from what worker_tasks.record wrote."""
    out: dict[int, list[dict[str, Any]]] = {}
    for raw in await redis.lrange("order", 0, -1):
        job_id = raw.decode()
        prefix = f"sched:q:{name}:"
        if job_id.startswith(prefix) and int(job_id[len(prefix) :]) not in out:
            runs = [json.loads(x) for x in await redis.lrange(f"runs:{job_id}", 0, -1)]
            out[int(job_id[len(prefix) :])] = runs
    return out


async def settle(redis: Redis, name: str) -> None:
    """Pause the schedule and wait until every job it enqueued has run."""
    await redis.zrem(KEYS.next, name)
    await redis.sadd(KEYS.paused, name)

    async def idle() -> bool:
        return await redis.zcard("arq:queue:q") == 0 and await redis.zcard("arqscale:q:active") == 0

    await wait_until(idle, 20, "every scheduled job run")


def assert_one_run_per_tick(ticks: dict[int, list[dict[str, Any]]], every_ms: int) -> None:
    assert ticks, "no tick ran"
    order = sorted(ticks)
    # no tick lost: consecutive multiples of the interval
    assert [b - a for a, b in itertools.pairwise(order)] == [every_ms] * (len(order) - 1), order
    # no tick doubled: each tick's job started once as a first try (a rerun after a SIGKILL is try 2)
    doubled = {t: runs for t, runs in ticks.items() if sum(r["try"] == 1 for r in runs) != 1}
    assert doubled == {}


def fired_by(logs: list[WorkerProcess]) -> list[int]:
    """Ticks each worker logged as enqueued by it, all workers together."""
    ticks = []
    for w in logs:
        for line in w.output().splitlines():
            if "schedule often: enqueued the job of tick" in line:
                ticks.append(int(line.rsplit(" ", 1)[1]))
    return ticks


async def test_several_workers_fire_each_tick_once_through_a_sigkill(redis: Redis, workers: StartWorker) -> None:
    queues = with_schedules(often={"every": 0.5, "function": "record"})
    procs = [await workers(queues).ready() for _ in range(3)]
    await wait_until(lambda: _at_least(redis, 4), 15, "a few ticks")
    procs[0].proc.send_signal(signal.SIGKILL)  # maybe in the middle of a fire; the others carry on
    assert await procs[0].exited(5) == -signal.SIGKILL
    seen = len(await ran_ticks(redis, "often"))
    await wait_until(lambda: _at_least(redis, seen + 6), 15, "more ticks after the kill")
    await settle(redis, "often")
    ticks = await ran_ticks(redis, "often")
    assert_one_run_per_tick(ticks, 500)
    # and each tick was enqueued by exactly one worker (the log lines of all three, the killed one's too)
    logged = fired_by(procs)
    # (a worker killed right after its script ran never logged that tick: at most one such)
    assert sorted(logged) == sorted(set(logged)) and len(set(ticks) - set(logged)) <= 1
    last = json.loads(await redis.hget(KEYS.last, "often"))
    assert last["job_id"] == f"sched:q:often:{max(ticks)}"


async def _at_least(redis: Redis, n: int) -> bool:
    return len(await ran_ticks(redis, "often")) >= n


async def test_no_tick_is_lost_or_doubled_through_a_redis_restart(tmp_path: Path, workers: StartWorker) -> None:
    own = RedisServer(tmp_path / "own-redis", aof=True).start()
    client = Redis.from_url(own.url)
    try:
        queues = with_schedules(often={"every": 0.5, "function": "record"})
        env = {"REDIS_URL": own.url}
        for _ in range(2):
            await workers(queues, env=env).ready()
        await wait_until(lambda: _at_least(client, 3), 15, "a few ticks")
        own.kill()  # a crash; the AOF (fsync always) keeps every write it acknowledged
        await asyncio.sleep(2.0)  # four ticks fall due while Redis is away
        own.start()
        await client.aclose()
        client = Redis.from_url(own.url)
        seen = len(await ran_ticks(client, "often"))
        await wait_until(lambda: _at_least(client, seen + 8), 30, "ticks after the restart")
        await settle(client, "often")
        # the ticks due during the outage ran late (within grace), each once
        assert_one_run_per_tick(await ran_ticks(client, "often"), 500)
    finally:
        await client.aclose()
        own.kill()


async def test_ticks_missed_while_no_worker_ran_are_skipped_or_run_once(redis: Redis, workers: StartWorker) -> None:
    timing = {"every": 1, "function": "record", "grace": 1}
    queues = with_schedules(skipper=timing, once={**timing, "missed": "run_once"})
    first = await workers(queues).ready()

    async def both_ran() -> bool:
        return bool(await ran_ticks(redis, "skipper")) and bool(await ran_ticks(redis, "once"))

    await wait_until(both_ran, 15, "both schedules ticking")
    first.proc.send_signal(signal.SIGKILL)
    await first.exited(5)
    before = {name: max(await ran_ticks(redis, name)) for name in ("skipper", "once")}
    await asyncio.sleep(4.5)  # no worker: ticks pass, most more than `grace` ago
    second = await workers(queues).ready()

    async def ran_again() -> bool:
        latest = {n: max(await ran_ticks(redis, n)) for n in ("skipper", "once")}
        return all(latest[n] > before[n] + 3000 for n in latest)

    await wait_until(ran_again, 15, "ticks after the restart")
    for name in ("skipper", "once"):
        await settle(redis, name)
    skipper, once = await ran_ticks(redis, "skipper"), await ran_ticks(redis, "once")
    # skip: the ticks due while no worker ran, more than grace ago, have no job
    assert before["skipper"] + 1000 not in skipper and before["skipper"] + 2000 not in skipper
    # run_once: one job stands for them all, under the first missed tick; the next ones have none
    assert before["once"] + 1000 in once
    assert before["once"] + 2000 not in once and before["once"] + 3000 not in once
    assert "late (no worker ran); skipped" in second.output() and "running it once" in second.output()
    for ticks in (skipper, once):
        assert all(sum(r["try"] == 1 for r in runs) == 1 for runs in ticks.values())
