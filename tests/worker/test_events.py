"""Job events against a real redis-server and real worker processes: each path writes exactly its events, in
order, in the script that makes the change (docs/events.md), and the totals agree with what happened."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from redis.asyncio import Redis

from arqscale.core import event_stream, serializers
from arqscale.core.dead_letters import DeadLetters, RequeueOutcome
from arqscale.core.event_stream import JobCancelled, JobFailed, WaitTimeout
from arqscale.core.events import Event, events_key
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from worker_processes import StartWorker, stop_all, wait_until, worker_starter

FUNCTIONS = [
    "worker_tasks.add",
    "worker_tasks.fail",
    "worker_tasks.sleep",
    "worker_tasks.progress",
    "worker_tasks.retry_later",
    "worker_tasks.record",
]
BASE = {"functions": FUNCTIONS, "lease_seconds": 1, "poll_interval": 0.1, "concurrency": 4}
QUEUES: dict[str, Any] = {
    "q": {**BASE, "max_tries": 2, "backoff": {"strategy": "fixed", "delay": 0.05, "jitter": 0}},
    "legacy": {**BASE, "serializer": "pickle", "max_tries": 1},
    "quiet": {**BASE, "events": {"enabled": False}},
    "short": {**BASE, "events": {"max_len": 10}},
}
SPECS = parse_queues({"queues": QUEUES})


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


async def job_events(redis: Redis, job_id: str, queue: str = "q") -> list[Event]:
    return await event_stream.history(redis, queue, job=job_id)


def names(events: list[Event]) -> list[str]:
    return [e.event for e in events]


async def ended(redis: Redis, job_id: str, queue: str = "q", count: int = 1) -> list[Event]:
    async def check() -> list[Event] | None:
        events = await job_events(redis, job_id, queue)
        return events if sum(e.final for e in events) >= count else None

    result: list[Event] = await wait_until(check, 20, f"{job_id} to end")
    return result


async def test_a_job_that_completes_writes_waiting_active_completed(redis: Redis, workers: StartWorker) -> None:
    worker = await workers(QUEUES).ready()
    await Producer(redis, SPECS).enqueue("q", "add", 1, 2, job_id="j1")
    events = await ended(redis, "j1")
    assert names(events) == ["waiting", "active", "completed"]
    waiting, active, completed = events
    assert waiting.func == "add" and waiting.job_try is None
    assert active.job_try == 1 and active.worker and completed.worker == active.worker
    assert completed.duration_ms is not None and completed.duration_ms >= 0
    assert waiting.id < active.id < completed.id or [e.id for e in events] == sorted(e.id for e in events)
    assert waiting.at_ms <= active.at_ms <= completed.at_ms
    assert worker.proc.poll() is None


async def test_a_retried_then_dead_job_writes_failed_retrying_then_failed_dead(
    redis: Redis, workers: StartWorker
) -> None:
    await workers(QUEUES).ready()
    await Producer(redis, SPECS).enqueue("q", "fail", "no luck", job_id="j2")
    events = await ended(redis, "j2")
    assert names(events) == ["waiting", "active", "failed", "retrying", "active", "failed", "dead"]
    assert [e.job_try for e in events[1:]] == [1, 1, 1, 2, 2, 2]
    assert events[2].error == "ValueError: no luck" and events[6].error == "ValueError: no luck"
    assert events[3].delay_ms == 50
    totals = await event_stream.totals(redis, "q")
    assert totals | {"run_ms": 0} == {
        "enqueued": 1, "started": 2, "completed": 0, "failed": 2, "retried": 1, "dead": 1, "cancelled": 0,
        "requeued": 0, "run_ms": 0,
    }  # fmt: skip


async def test_a_delayed_job_and_its_progress(redis: Redis, workers: StartWorker) -> None:
    await workers(QUEUES).ready()
    await Producer(redis, SPECS).enqueue("q", "progress", job_id="j3", defer_seconds=0.2)
    events = await ended(redis, "j3")
    assert names(events) == ["delayed", "active", "progress", "completed"]
    assert events[0].delay_ms == 200
    assert (events[2].progress, events[2].message, events[2].job_try) == (50.0, "half way", 1)


async def test_wait_returns_the_result_or_raises_the_jobs_end(redis: Redis, workers: StartWorker) -> None:
    await workers(QUEUES).ready()
    producer = Producer(redis, SPECS)
    await producer.enqueue("q", "add", 2, 3, job_id="w1")
    assert await producer.wait("w1", timeout=20) == 5
    assert await producer.wait("w1", timeout=1) == 5  # already over: answered from the result
    await producer.enqueue("q", "fail", "bad", job_id="w2")
    with pytest.raises(JobFailed, match="ValueError: bad"):
        await producer.wait("w2", timeout=20)
    await producer.enqueue("q", "sleep", 30, job_id="w3")
    with pytest.raises(WaitTimeout):
        await producer.wait("w3", timeout=0.3)
    await producer.cancel("w3")
    with pytest.raises(JobCancelled):
        await producer.wait("w3", timeout=20)
    # arq's own Job.result() keeps working beside it.
    arq = ArqRedis(connection_pool=redis.connection_pool)
    job = Job("w1", arq, _queue_name=SPECS["q"].queue_key, _deserializer=serializers.json_loads)
    assert await job.result(timeout=5) == 5


async def test_cancelling_a_waiting_and_a_running_job(redis: Redis, workers: StartWorker) -> None:
    producer = Producer(redis, SPECS)
    await producer.enqueue("q", "add", 1, 1, job_id="c1", defer_seconds=60)
    await producer.cancel("c1")
    assert names(await job_events(redis, "c1")) == ["delayed", "cancelled"]
    assert (await job_events(redis, "c1"))[1].reason == "cancelled on request"
    await workers(QUEUES).ready()
    await producer.enqueue("q", "sleep", 30, job_id="c2")
    await wait_until(lambda: _has(redis, "c2", "active"), 10, "c2 to start")
    await producer.cancel("c2")
    events = await ended(redis, "c2")
    assert names(events) == ["waiting", "active", "cancelled"]
    assert events[2].reason == "cancelled while running" and events[2].duration_ms is not None
    assert (await event_stream.totals(redis, "q"))["cancelled"] == 2


async def _has(redis: Redis, job_id: str, event: str, queue: str = "q") -> bool:
    return event in names(await job_events(redis, job_id, queue))


async def test_a_drained_job_is_requeued_and_a_killed_workers_job_swept(redis: Redis, workers: StartWorker) -> None:
    queues = {**QUEUES, "q": {**QUEUES["q"], "job_timeout": 30, "drain_timeout": 30}}
    producer = Producer(redis, SPECS)
    first = await workers(queues, "q", "--drain-timeout", "0.2").ready()
    await producer.enqueue("q", "sleep", 2, job_id="d1")
    await wait_until(lambda: _has(redis, "d1", "active"), 10, "d1 to start")
    first.proc.send_signal(signal.SIGTERM)
    await first.exited(15)
    assert names(await job_events(redis, "d1")) == ["waiting", "active", "requeued"]
    requeued = (await job_events(redis, "d1"))[2]
    assert (requeued.reason, requeued.job_try) == ("drain", 1)

    killed = await workers(queues).ready()
    await wait_until(lambda: _has(redis, "d1", "active"), 10, "d1 to start again")
    killed.proc.kill()
    await killed.exited(10)
    await workers(queues).ready()
    events = await ended(redis, "d1")
    assert names(events) == ["waiting", "active", "requeued", "active", "requeued", "active", "completed"]
    assert events[4].reason == "stalled" and events[4].worker == events[3].worker
    # The drain's cut-short try did not count; the killed worker's did.
    assert [e.job_try for e in events if e.event == "active"] == [1, 1, 2]


async def test_a_dead_letter_requeued_runs_again(redis: Redis, workers: StartWorker) -> None:
    await workers(QUEUES).ready()
    producer = Producer(redis, SPECS)
    await producer.enqueue("q", "fail", job_id="r1")
    await ended(redis, "r1")
    assert await DeadLetters(redis, SPECS["q"]).requeue("r1") is RequeueOutcome.REQUEUED
    events = await ended(redis, "r1", count=2)
    assert names(events)[7:] == ["requeued", "active", "failed", "retrying", "active", "failed", "dead"]
    assert events[7].reason == "dead_letter"
    # No second `waiting`: the requeue announced it; its tries start again at 1.
    assert events[8].job_try == 1


async def test_a_plain_arq_producers_job_gets_waiting_from_the_pickup(redis: Redis, workers: StartWorker) -> None:
    await workers(QUEUES, "legacy").ready()
    arq = ArqRedis(connection_pool=redis.connection_pool)
    job = await arq.enqueue_job("add", 4, 5, _job_id="p1", _queue_name=SPECS["legacy"].queue_key)
    assert job is not None
    info = await job.info()
    assert info is not None
    events = await ended(redis, "p1", "legacy")
    assert names(events) == ["waiting", "active", "completed"]
    # Written by the pickup, just before `active`, with the enqueue time arq stored in the (pickled) payload.
    assert events[0].enqueued_ms == round(info.enqueue_time.timestamp() * 1000)
    assert events[0].func is None
    assert await job.result(timeout=5) == 9
    totals = await event_stream.totals(redis, "legacy")
    assert (totals["enqueued"], totals["started"], totals["completed"]) == (1, 1, 1)


async def test_a_plain_arq_producers_json_job_carries_its_enqueue_time(redis: Redis, workers: StartWorker) -> None:
    await workers(QUEUES).ready()
    arq = ArqRedis(connection_pool=redis.connection_pool, job_serializer=lambda d: json.dumps(d).encode())
    job = await arq.enqueue_job("add", 1, 1, _job_id="p2", _queue_name=SPECS["q"].queue_key, _defer_by=0.1)
    assert job is not None
    events = await ended(redis, "p2")
    assert names(events) == ["waiting", "active", "completed"]
    assert events[0].enqueued_ms is not None and events[0].enqueued_ms <= events[0].at_ms


async def test_a_queue_with_events_off_writes_none_but_counts(redis: Redis, workers: StartWorker) -> None:
    await workers(QUEUES, "quiet").ready()
    producer = Producer(redis, SPECS)
    await producer.enqueue("quiet", "add", 1, 1, job_id="n1")
    assert await producer.wait("n1", timeout=20) == 2
    assert await redis.exists(events_key("quiet")) == 0
    totals = await event_stream.totals(redis, "quiet")
    assert (totals["enqueued"], totals["started"], totals["completed"]) == (1, 1, 1)


async def test_the_stream_is_capped(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    for i in range(500):
        await producer.enqueue("short", "add", 1, i, job_id=f"s{i}", defer_seconds=60)
    # MAXLEN ~ trims whole nodes (100 entries by default): about max_len, never the whole history.
    assert await redis.xlen(events_key("short")) < 10 + 100
    kept = await event_stream.history(redis, "short")
    assert kept[-1].job == "s499"
    assert await event_stream.trimmed_after(redis, "short", "0-1")
    assert not await event_stream.trimmed_after(redis, "short", kept[0].id)


async def test_a_live_tail_sees_new_events_in_order(redis: Redis, workers: StartWorker) -> None:
    await workers(QUEUES).ready()
    producer = Producer(redis, SPECS)
    seen: list[Event] = []

    async def tail() -> None:
        async for event in producer.events("q", job="t2"):
            seen.append(event)
            if event.final:
                return

    task = asyncio.create_task(tail())
    await asyncio.sleep(0.3)  # the tail starts from "now": give it time to read its starting point
    await producer.enqueue("q", "add", 1, 1, job_id="t1")
    await producer.enqueue("q", "add", 1, 2, job_id="t2")
    await asyncio.wait_for(task, 20)
    assert names(seen) == ["waiting", "active", "completed"]
    assert {e.job for e in seen} == {"t2"}


async def test_a_schedule_tick_writes_its_jobs_waiting(redis: Redis, workers: StartWorker) -> None:
    queues = {**QUEUES, "q": {**QUEUES["q"], "schedules": {"often": {"every": 0.5, "function": "add", "args": [1, 2]}}}}
    await workers(queues).ready()

    async def two_ticks_done() -> list[Event] | None:
        done = [e for e in await event_stream.history(redis, "q") if e.event == "completed"]
        return done if len(done) >= 2 else None

    done = await wait_until(two_ticks_done, 20, "two scheduled jobs to complete")
    for job_id in {e.job for e in done}:
        assert job_id.startswith("sched:q:often:")
        assert names(await job_events(redis, job_id)) == ["waiting", "active", "completed"]
        assert (await job_events(redis, job_id))[0].func == "add"


async def test_totals_agree_with_the_outcomes_after_a_run_with_several_workers(
    redis: Redis, workers: StartWorker
) -> None:
    queues = {**QUEUES, "q": {**QUEUES["q"], "concurrency": 3}}
    for _ in range(3):
        await workers(queues).ready()
    producer = Producer(redis, SPECS)
    jobs: dict[str, str] = {}
    for i in range(60):
        kind = ("ok", "ok", "fail", "cancel")[i % 4]
        job_id = f"m{i}"
        jobs[job_id] = kind
        if kind == "ok":
            await producer.enqueue("q", "add", i, 1, job_id=job_id)
        elif kind == "fail":
            await producer.enqueue("q", "fail", job_id=job_id)
        else:
            await producer.enqueue("q", "add", i, 1, job_id=job_id, defer_seconds=600)
            await producer.cancel(job_id)
    ends: dict[str, str] = {}
    for job_id in jobs:
        try:
            await producer.wait(job_id, timeout=30)
            ends[job_id] = "ok"
        except JobFailed:
            ends[job_id] = "fail"
        except JobCancelled:
            ends[job_id] = "cancel"
    assert ends == jobs
    totals = await event_stream.totals(redis, "q")
    n_ok, n_fail, n_cancel = (sum(1 for k in jobs.values() if k == x) for x in ("ok", "fail", "cancel"))
    assert totals["enqueued"] == len(jobs)
    assert totals["completed"] == n_ok
    assert totals["dead"] == n_fail
    assert totals["failed"] == 2 * n_fail  # max_tries 2: each failing job failed two tries
    assert totals["retried"] == n_fail
    assert totals["cancelled"] == n_cancel
    assert totals["started"] == n_ok + 2 * n_fail
    assert totals["requeued"] == 0
    # And the stream says the same, event by event.
    kept = await event_stream.history(redis, "q", limit=10_000)
    counted = {name: sum(1 for e in kept if e.event == name) for name in ("completed", "dead", "failed", "cancelled")}
    assert counted == {"completed": n_ok, "dead": n_fail, "failed": 2 * n_fail, "cancelled": n_cancel}
