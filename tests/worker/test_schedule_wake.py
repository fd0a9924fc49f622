"""A runtime schedule change wakes the queue's workers' schedulers (docs/design.md, "Schedules").

The worker runs in-process against a real redis-server, with its scheduler's poll stretched to an hour: a
schedule created, changed or resumed through ``ScheduleStore`` (what the API, the CLI and ``Schedules``
call) can only run in this test if the wake message published with the write reaches the scheduler through
the worker's wake listener. tests/worker/test_schedules_process.py covers schedules in worker processes.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from test_worker import make_spec, running, wait_for

from arqscale.core.schedule_spec import Schedule
from arqscale.core.schedules import ScheduleStore
from arqscale.worker.loop import Worker


@pytest.mark.parametrize("change", ["created", "changed", "resumed"])
async def test_a_runtime_change_is_seen_at_once_not_at_the_next_poll(redis: Redis, change: str) -> None:
    spec = make_spec(lease_seconds=10, job_timeout=5)
    store = ScheduleStore(redis, spec)
    soon = Schedule(name="s", every=1, function="record")
    # Before the worker starts: nothing, a schedule that ticks once an hour, or a paused one.
    if change == "changed":
        await store.put(Schedule(name="s", every=3600, function="record"))
    elif change == "resumed":
        await store.put(soon)
        assert await store.pause("s")
    worker = Worker(spec, redis)
    worker.scheduler.poll_seconds = 3600

    async def looked() -> bool:
        return worker.scheduler.looks >= 1

    async def ran() -> bool:
        return (await store.get("s")).last_job is not None

    async def counted() -> bool:
        return worker.scheduler.fired >= 1

    async with running(worker):
        # After its first look the scheduler sleeps an hour (or until the hourly tick): only a wake ends that.
        await wait_for(looked, 10, "the scheduler's first look")
        if change == "resumed":
            assert await store.resume("s")
        else:
            assert await store.put(soon) == ("created" if change == "created" else "replaced")
        await wait_for(ran, 20, f"the {change} schedule's first job (an hour's sleep without the wake)")
        # This worker enqueued it. Its count follows the script's reply, which this test's read of the
        # schedule can overtake (a CI run did): waited for, briefly, not asserted at once.
        await wait_for(counted, 5, "this worker's count of the job it enqueued")
