"""The schedule store against a real Redis: runtime changes, the start-up sync of declared schedules, and the
fire script's compare-and-set (one job per tick however many callers race for it)."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from redis.asyncio import Redis

from arqscale.core.producer import UnknownFunctionError
from arqscale.core.schedule_spec import Schedule
from arqscale.core.schedules import (
    DeclaredScheduleError,
    ScheduleKeys,
    ScheduleNotFoundError,
    Schedules,
    ScheduleStore,
)
from arqscale.core.spec import QueueSpec, parse_queues


def queue(schedules: dict[str, Any] | None = None, **extra: Any) -> QueueSpec:
    body = {"functions": ["tasks.report", "tasks.other"], "schedules": schedules or {}, **extra}
    return parse_queues({"queues": {"q": body}})["q"]


async def redis_ms(redis: Redis) -> int:
    sec, micro = await redis.time()
    return int(sec) * 1000 + int(micro) // 1000


async def test_runtime_schedules_are_created_changed_paused_resumed_and_removed(redis: Redis) -> None:
    store = ScheduleStore(redis, queue())
    hourly = Schedule(name="hourly", cron="0 * * * *", function="report", args=[1])
    assert await store.put(hourly) == "created"
    assert await store.put(hourly) == "unchanged"
    [view] = await store.views()
    now = await redis_ms(redis)
    assert view.origin == "api" and not view.paused and view.last_job is None
    assert view.next_run_at is not None and now / 1000 < view.next_run_at <= now / 1000 + 3600
    assert view.schedule is not None and view.schedule.args == [1]

    assert await store.put(hourly.model_copy(update={"args": [2]})) == "replaced"
    assert (await store.get("hourly")).schedule.args == [2]  # type: ignore[union-attr]

    assert await store.pause("hourly") is True
    assert await store.pause("hourly") is False
    paused = await store.get("hourly")
    assert paused.paused and paused.next_run_at is None
    assert await redis.zscore(store.keys.next, "hourly") is None
    # changing a paused schedule keeps it paused
    assert await store.put(hourly) == "replaced"
    assert (await store.get("hourly")).paused

    assert await store.resume("hourly") is True
    assert await store.resume("hourly") is False
    assert (await store.get("hourly")).next_run_at is not None

    assert await store.remove("hourly") is True
    assert await store.remove("hourly") is False
    assert await store.views() == []
    assert not await redis.exists(*ScheduleKeys.for_queue("q").all())
    with pytest.raises(ScheduleNotFoundError):
        await store.pause("hourly")
    with pytest.raises(ScheduleNotFoundError):
        await store.resume("hourly")


async def test_runtime_changes_are_checked_against_the_queue(redis: Redis) -> None:
    schedules = Schedules(redis, {"q": queue({"nightly": {"cron": "0 3 * * *", "function": "report"}})})
    with pytest.raises(UnknownFunctionError):
        await schedules.put("q", Schedule(name="x", every=5, function="nope"))
    with pytest.raises(ValueError, match="priority"):
        await schedules.put("q", Schedule(name="x", every=5, function="report", priority=7))
    # declared ones are changed in the queues file, not at run time; pausing them is fine
    await schedules.store("q").sync_declared()
    with pytest.raises(DeclaredScheduleError):
        await schedules.put("q", Schedule(name="nightly", every=5, function="report"))
    with pytest.raises(DeclaredScheduleError):
        await schedules.remove("q", "nightly")
    assert await schedules.pause("q", "nightly") is True


async def test_sync_writes_declared_schedules_keeps_unchanged_ticks_and_drops_undeclared_ones(redis: Redis) -> None:
    v1 = queue({"a": {"every": 3600, "function": "report"}, "b": {"every": 60, "function": "report"}})
    assert sorted(await ScheduleStore(redis, v1).sync_declared()) == ["a", "b"]
    runtime = ScheduleStore(redis, v1)
    await runtime.put(Schedule(name="runtime", every=10, function="other"))
    # a far-off tick, so we can see whether a second sync touches it
    await redis.zadd(runtime.keys.next, {"a": 9_000_000_000_000})
    await runtime.pause("b")
    assert await ScheduleStore(redis, v1).sync_declared() == []  # another replica, same spec: nothing changes
    assert await redis.zscore(runtime.keys.next, "a") == 9_000_000_000_000
    assert (await runtime.get("b")).paused  # a pause survives worker restarts

    v2 = queue({"a": {"every": 1800, "function": "report"}})  # a changed, b gone
    assert sorted(await ScheduleStore(redis, v2).sync_declared()) == ["a", "b"]
    names = {v.name: v for v in await ScheduleStore(redis, v2).views()}
    assert sorted(names) == ["a", "runtime"]  # runtime schedules are not the queues file's to remove
    assert names["a"].next_run_at is not None and names["a"].next_run_at < 9_000_000_000
    assert names["runtime"].origin == "api" and names["a"].origin == "spec"


async def test_concurrent_fires_of_one_tick_enqueue_one_job(redis: Redis) -> None:
    spec = queue({"often": {"every": 1, "function": "report", "args": [7]}})
    stores = [ScheduleStore(redis, spec) for _ in range(8)]
    await stores[0].sync_declared()
    tick = 1_000
    await redis.zadd(stores[0].keys.next, {"often": tick})
    _, due, _ = await stores[0].due(10)
    [(name, due_tick, raw)] = due
    assert (name, due_tick) == ("often", tick)
    # every "worker" read the same due tick; they all fire it at once
    now = tick + 500  # half a second late: within grace, so it runs
    results = await asyncio.gather(*(s.fire(name, due_tick, raw, now, random.Random(i)) for i, s in enumerate(stores)))
    assert sorted(r for r, _ in results) == [0] * 7 + [1]
    job_id = f"sched:q:often:{tick}"
    assert await redis.zrange(spec.queue_key, 0, -1) == [job_id.encode()]
    assert await redis.exists(f"arq:job:{job_id}")
    last = json.loads(await redis.hget(stores[0].keys.last, "often"))
    assert (last["job_id"], last["tick_ms"]) == (job_id, tick)
    assert await redis.zscore(stores[0].keys.next, "often") == 2_000.0  # advanced past the fired tick


async def test_a_tick_fired_again_under_the_same_id_is_not_a_second_job(redis: Redis) -> None:
    # What a Redis that lost the tick's advance but kept the job would look like (it cannot, the two are one
    # script; this is the enqueue's own guard).
    spec = queue({"often": {"every": 1, "function": "report"}})
    store = ScheduleStore(redis, spec)
    await store.sync_declared()
    await redis.zadd(store.keys.next, {"often": 5_000})
    _, [(name, tick, raw)], _ = await store.due(10)
    assert (await store.fire(name, tick, raw, 5_010, random.Random()))[0] == 1
    await redis.zadd(store.keys.next, {"often": 5_000})  # rewind
    assert (await store.fire(name, tick, raw, 5_010, random.Random()))[0] == 2  # advanced, no second job
    assert await redis.zcard(spec.queue_key) == 1


async def test_a_fire_loses_to_a_change_made_after_it_read_the_schedule(redis: Redis) -> None:
    store = ScheduleStore(redis, queue())
    await store.put(Schedule(name="s", every=1, function="report", args=["old"]))
    await redis.zadd(store.keys.next, {"s": 1_000})
    _, [(name, tick, raw)], _ = await store.due(10)
    await store.put(Schedule(name="s", every=1, function="report", args=["new"]))
    await redis.zadd(store.keys.next, {"s": 1_000})  # even at the same tick, the definition differs
    assert (await store.fire(name, tick, raw, 1_010, random.Random()))[0] == 0
    assert await redis.zcard("arq:queue:q") == 0


async def test_missed_ticks_are_skipped_or_run_once(redis: Redis) -> None:
    spec = queue(
        {
            "skipper": {"every": 10, "function": "report", "grace": 5},
            "once": {"every": 10, "function": "report", "grace": 5, "missed": "run_once"},
        }
    )
    store = ScheduleStore(redis, spec)
    await store.sync_declared()
    await redis.zadd(store.keys.next, {"skipper": 10_000, "once": 10_000})
    now = 100_000  # 90 s late
    _, due, _ = await store.due(10)
    results = {name: await store.fire(name, tick, raw, now, random.Random()) for name, tick, raw in due}
    assert results["skipper"][0] == 2 and results["once"][0] == 1
    assert await redis.zrange(spec.queue_key, 0, -1) == [b"sched:q:once:10000"]
    # both continue at the first tick after now - grace (95 s): 100 s
    assert await redis.zscore(store.keys.next, "skipper") == 100_000.0
    assert await redis.zscore(store.keys.next, "once") == 100_000.0


async def test_an_unusable_stored_definition_stops_ticking_and_says_why(redis: Redis) -> None:
    store = ScheduleStore(redis, queue())
    await redis.hset(store.keys.defs, "broken", '{"origin": "api", "schedule": {"every": -1}}')
    await redis.zadd(store.keys.next, {"broken": 1_000})
    _, [(name, tick, raw)], _ = await store.due(10)
    assert (await store.fire(name, tick, raw, 1_010, random.Random()))[0] == 2
    [view] = await store.views()
    assert view.schedule is None and view.problem and "unusable" in view.problem
    assert view.next_run_at is None
