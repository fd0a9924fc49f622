"""The worker's reserve: leased jobs kept ready to start the moment a slot frees (``Worker._reserve_room``).

In-process workers against a real redis-server. The reserve is sized from the queue's recent run times so a job
waits about ``RESERVE_WAIT_SECONDS`` in it; these tests widen that wait so it fills with jobs slow enough to
watch, then check what must hold whatever its size: never more running than the concurrency, and every reserved
job started, put back (drain, a reserve held too long) or cancelled, none lost or run twice.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis
from test_worker import make_spec, running, wait_for

from arqscale.core.cancellation import CancelOutcome, cancel
from arqscale.core.events import split_entry
from arqscale.core.keys import QueueKeys, retry_key
from arqscale.core.producer import Producer
from arqscale.core.scores import LEASED
from arqscale.core.spec import QueueSpec
from arqscale.core.webhook_store import parse_fields
from arqscale.worker import loop
from arqscale.worker.loop import Worker


@pytest.fixture(autouse=True)
def patient_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    # Jobs of a few hundred ms would get no reserve at the real 5 ms: let them wait up to a second on average.
    monkeypatch.setattr(loop, "RESERVE_WAIT_SECONDS", 1.0)


def keys_of(spec: QueueSpec) -> QueueKeys:
    return QueueKeys.for_queue(spec.name, spec.queue_key)


async def running_jobs(redis: Redis, spec: QueueSpec) -> int:
    """Jobs running under a lease: parked in the queue above every band (``scores.LEASED``)."""
    return int(await redis.zcount(keys_of(spec).queue, LEASED, "+inf"))


async def events_of(redis: Redis, spec: QueueSpec, event: str) -> list[dict[str, str]]:
    entries = await redis.xrange(keys_of(spec).events)
    # A batched entry holds the events of several jobs (events.split_entry).
    found = [parse_fields(one) for entry_id, fields in entries for _, one in split_entry(entry_id, fields)]
    return [e for e in found if e["event"] == event]


async def runs_of(redis: Redis, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in await redis.lrange(f"runs:{job_id}", 0, -1)]


async def watch(worker: Worker, seen: list[tuple[int, int]]) -> None:
    """Jobs running and jobs reserved, sampled. (The active set also holds jobs that ended and whose outcome is
    on its way: it says less.)"""
    while True:
        seen.append((len(worker._running), len(worker._reserved)))
        await asyncio.sleep(0.005)


async def holding(worker: Worker, running: int, reserved: int) -> list[str] | None:
    """The reserved ids once ``worker`` runs ``running`` jobs and holds ``reserved`` more."""
    if len(worker._running) == running and len(worker._reserved) == reserved:
        return list(worker._reserved)
    return None


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_busy_worker_holds_a_reserve_and_never_runs_more_than_its_concurrency(redis: Redis) -> None:
    spec = make_spec(concurrency=4)  # at most 8 jobs per pickup, so a reserve of at most 8 per lane but one
    producer = Producer(redis, {"q": spec})
    for i in range(30):
        await producer.enqueue("q", "sleep", 0.1, job_id=f"s{i}")
    seen: list[tuple[int, int]] = []
    worker = Worker(spec, redis)
    watcher = asyncio.create_task(watch(worker, seen))
    try:
        async with running(worker):
            await wait_for(lambda: _eq(redis.llen("finished"), 30), within=20, what="all finished")
    finally:
        watcher.cancel()
    assert int(await redis.get("max_in_flight")) == 4
    assert max(r for r, _ in seen) == 4
    # Leased beyond the four running: the reserve (once the first jobs' run times were known), full but no more.
    assert worker._pick_cap == 8
    assert max(k for _, k in seen) == (loop.LANES - 1) * 8
    assert sorted(await redis.lrange("finished", 0, -1)) == sorted(f"s{i}".encode() for i in range(30))
    assert [len(await runs_of(redis, f"s{i}")) for i in range(30)] == [1] * 30


async def test_without_prefetch_or_with_limits_nothing_is_leased_beyond_the_concurrency(redis: Redis) -> None:
    specs = [
        make_spec("off", concurrency=4, prefetch=False),
        make_spec("rated", concurrency=4, rate_limit={"max_jobs": 1000, "interval": 1}),
        make_spec("grouped", concurrency=4, group={"concurrency": 100}),
    ]
    for spec in specs:
        producer = Producer(redis, {spec.name: spec})
        for i in range(16):
            await producer.enqueue(spec.name, "sleep", 0.1, job_id=f"{spec.name}-{i}")
        seen: list[tuple[int, int]] = []
        worker = Worker(spec, redis)
        watcher = asyncio.create_task(watch(worker, seen))
        try:
            async with running(worker):
                await wait_for(lambda: _eq(redis.llen("finished"), 16), within=20, what=f"{spec.name} finished")
        finally:
            watcher.cancel()
        assert max(r for r, _ in seen) == 4 and max(k for _, k in seen) == 0, spec.name
        await redis.delete("finished")


async def test_a_drain_puts_the_reserve_back_at_once_with_its_tries_uncounted(redis: Redis) -> None:
    spec = make_spec(concurrency=4, drain_timeout=10)
    producer = Producer(redis, {"q": spec})
    for i in range(4):
        await producer.enqueue("q", "sleep", 0.05, job_id=f"warm{i}")
    worker = Worker(spec, redis, worker_id="w-drain")
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: _eq(redis.llen("finished"), 4), what="warm-up jobs (the run times are known)")
        for i in range(6):
            await producer.enqueue("q", "sleep", 1.0, job_id=f"long{i}")
        reserved = set(await wait_for(lambda: holding(worker, 4, 2), what="four running, two reserved"))
        worker.request_drain()
        # Back in the queue while the four running jobs still run, each try counter as before its pickup.
        requeued = await wait_for(lambda: _requeued(redis, spec, 2), within=2, what="the reserve put back")
        assert {e["job"] for e in requeued} == reserved and {e["reason"] for e in requeued} == {"drain"}
        assert await running_jobs(redis, spec) == 4
        for job_id in reserved:
            assert await redis.zscore(keys_of(spec).queue, job_id) is not None
            assert int(await redis.get(retry_key(job_id))) == 0
            assert await runs_of(redis, job_id) == []
        await asyncio.wait_for(task, 10)
    finally:
        if not task.done():
            worker.request_drain()
            await asyncio.wait_for(task, 10)
    # Another worker runs them, on their first try.
    async with running(Worker(spec, redis)):
        await wait_for(lambda: _eq(redis.llen("finished"), 10), within=10, what="every job finished")
    for job_id in reserved:
        assert [r["try"] for r in await runs_of(redis, job_id)] == [1]


async def _requeued(redis: Redis, spec: QueueSpec, n: int) -> list[dict[str, str]] | None:
    found = await events_of(redis, spec, "requeued")
    return found if len(found) >= n else None


async def test_a_reserve_held_up_by_long_jobs_goes_back_for_a_worker_with_room(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "RESERVE_MAX_SECONDS", 0.3)
    spec = make_spec(concurrency=2, drain_timeout=10)  # three long jobs below: two run, one waits in the reserve
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "sleep", 0.05, job_id="warm")
    first = Worker(spec, redis, worker_id="w-busy")
    async with running(first):
        await wait_for(lambda: _eq(redis.llen("finished"), 1), what="the warm-up job")
        for i in range(3):
            await producer.enqueue("q", "sleep", 3.0, job_id=f"long{i}")
        [held] = await wait_for(lambda: holding(first, 2, 1), what="two running, one reserved")
        requeued = await wait_for(lambda: _requeued(redis, spec, 1), within=3, what="the held reserve put back")
        assert requeued[0]["job"] == held and requeued[0]["reason"] == "unstarted"
        # The busy worker's two long jobs still run; a worker with room runs the one it gave back, now.
        async with running(Worker(spec, redis, worker_id="w-free")):
            runs = await wait_for(lambda: runs_of(redis, held), within=3, what="the other worker runs it")
        assert [(r["worker"], r["try"]) for r in runs] == [("w-free", 1)]
        # Started while the busy worker's long jobs still ran, not after them.
        longs = [(await runs_of(redis, f"long{i}")) for i in range(3)]
        first_start = min(r[0]["at"] for r in longs if r and r[0]["worker"] == "w-busy")
        assert runs[0]["at"] < first_start + 2.0


async def test_a_cancel_request_ends_a_reserved_job_unrun(redis: Redis) -> None:
    spec = make_spec(concurrency=2)
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "sleep", 0.05, job_id="warm")
    worker = Worker(spec, redis)
    async with running(worker):
        await wait_for(lambda: _eq(redis.llen("finished"), 1), what="the warm-up job")
        for i in range(3):
            await producer.enqueue("q", "sleep", 1.5, job_id=f"long{i}")
        [held] = await wait_for(lambda: holding(worker, 2, 1), what="two running, one reserved")
        assert await cancel(redis, spec, held) == CancelOutcome.CANCELLING
        cancelled = await wait_for(lambda: events_of(redis, spec, "cancelled"), within=2, what="cancelled")
        assert [e["job"] for e in cancelled] == [held]
        assert not worker._reserved and await running_jobs(redis, spec) == 2
        await wait_for(lambda: _eq(redis.llen("finished"), 3), within=5, what="the two long jobs")
    assert await runs_of(redis, held) == []
    assert await redis.zscore(keys_of(spec).queue, held) is None
