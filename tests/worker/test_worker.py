"""The worker loop in-process against a real redis-server: pickup, outcomes, DLQ, priorities, pause, drain.

Process-level behaviour (signals, kills, a blocked loop, Redis restarts, two processes sharing a rate
limit) is in test_worker_process.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus, SerializationError
from arq.worker import JobExecutionFailed
from redis.asyncio import Redis

from arqscale.core import queue_control, scores, serializers
from arqscale.core.keys import QueueKeys, error_key, in_progress_key, job_key, progress_key, retry_key
from arqscale.core.models import DeadJob, JobRequest, Progress
from arqscale.core.producer import Producer
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.worker.loop import Worker
from arqscale.worker.metrics import WorkerMetrics
from arqscale.worker.probes import Health, build_app, start_server
from redis_server import RedisServer, free_port

FUNCTIONS = [
    "worker_tasks.add",
    "worker_tasks.record",
    "worker_tasks.sleep",
    "worker_tasks.fail",
    "worker_tasks.retry_later",
    "worker_tasks.progress",
    "worker_tasks.chain",
]


def make_spec(name: str = "q", **settings: Any) -> QueueSpec:
    body = {"functions": FUNCTIONS, "lease_seconds": 1, "poll_interval": 0.1, "job_timeout": 5, **settings}
    return parse_queues({"queues": {name: body}})[name]


async def wait_for(check: Callable[[], Awaitable[Any]], within: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_drain()
        await asyncio.wait_for(task, 10)


async def runs(redis: Redis, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in await redis.lrange(f"runs:{job_id}", 0, -1)]


async def dead_entry(redis: Redis, spec: QueueSpec, job_id: str) -> DeadJob | None:
    raw = await redis.hget(QueueKeys.for_queue(spec.name, spec.queue_key).dlq, job_id)
    return DeadJob.model_validate_json(raw) if raw else None


async def test_runs_producer_and_plain_arq_jobs_with_arq_compatible_results(redis: Redis) -> None:
    spec = make_spec()
    pickled = make_spec("legacy", serializer="pickle")
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "add", 2, 3, job_id="ours")
    arq_json = ArqRedis(connection_pool=redis.connection_pool, job_serializer=serializers.json_dumps)
    await arq_json.enqueue_job("add", 4, 5, _job_id="plain-json", _queue_name=spec.queue_key)
    arq_pickle = ArqRedis(connection_pool=redis.connection_pool)  # arq's default: pickle
    await arq_pickle.enqueue_job("add", 1, 1, _job_id="plain-pickle", _queue_name=pickled.queue_key)
    async with running(Worker(spec, redis)), running(Worker(pickled, redis)):
        ours = Job("ours", redis, _queue_name=spec.queue_key, _deserializer=serializers.json_loads)
        plain = Job("plain-json", redis, _queue_name=spec.queue_key, _deserializer=serializers.json_loads)
        legacy = Job("plain-pickle", redis, _queue_name=pickled.queue_key)
        assert await ours.result(timeout=5, poll_delay=0.05) == 5
        assert await plain.result(timeout=5, poll_delay=0.05) == 9
        assert await legacy.result(timeout=5, poll_delay=0.05) == 2
    k = QueueKeys.for_queue("q", spec.queue_key)
    # Finished jobs leave arq's keys clean and land in the completed index.
    assert await redis.zcard(k.queue) == 0
    assert await redis.exists(job_key("ours"), in_progress_key("ours"), retry_key("ours")) == 0
    assert set(await redis.zrange(k.completed, 0, -1)) == {b"ours", b"plain-json"}
    assert (await runs(redis, "ours"))[0]["try"] == 1


async def test_concurrency_caps_jobs_in_flight(redis: Redis) -> None:
    spec = make_spec(concurrency=3)
    producer = Producer(redis, {"q": spec})
    for i in range(9):
        await producer.enqueue("q", "sleep", 0.2, job_id=f"s{i}")
    async with running(Worker(spec, redis)):
        await wait_for(lambda: redis.llen("finished"), what="first finish")
        await wait_for(lambda: _eq(redis.llen("finished"), 9), what="all finished")
    assert int(await redis.get("max_in_flight")) == 3


async def test_two_round_trips_in_flight_take_jobs_and_never_exceed_concurrency(redis: Redis) -> None:
    # Jobs of uneven length end one by one: while one lane's round trip is out, the other takes the freed slots.
    spec = make_spec(concurrency=4)
    producer = Producer(redis, {"q": spec})
    for i in range(200):
        await producer.enqueue("q", "sleep", (i % 6) / 1000, job_id=f"u{i}")
    async with running(Worker(spec, redis, worker_id="w-lanes")) as worker:
        await wait_for(lambda: _eq(redis.llen("finished"), 200), within=20, what="all finished")
        keys = worker.ops.keys
        assert await redis.exists(keys.pick("w-lanes", 0)) and await redis.exists(keys.pick("w-lanes", 1))
    assert int(await redis.get("max_in_flight")) == 4
    assert sorted(set(await redis.lrange("finished", 0, -1))) == sorted(f"u{i}".encode() for i in range(200))


async def test_a_bug_in_a_round_trip_ends_the_worker_with_that_error(redis: Redis) -> None:
    # Round trips run as tasks of their own (two lanes): a bug in one must still end run(), not vanish in a task.
    spec = make_spec()
    worker = Worker(spec, redis)

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug in the round trip")

    worker.ops.finish_and_pickup = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug in the round trip"):
        await asyncio.wait_for(worker.run(), 10)


def _pickups(worker: Worker) -> float:
    return worker.metrics.registry.get_sample_value("arqscale_worker_pickups_total", {"queue": "q"}) or 0.0


async def test_a_trickled_job_wakes_one_idle_worker_not_every_one(redis: Redis) -> None:
    # Our enqueue adds the queue's marker; one idle worker takes it (BZPOPMIN). Before, every idle worker answered
    # every enqueue's wake-up with a pickup: six workers, six pickup calls per job (bench/idle_herd.py).
    spec = make_spec(concurrency=4, poll_interval=5)  # no poll inside the measured window
    producer = Producer(redis, {"q": spec})
    workers = [Worker(spec, redis, worker_id=f"idle-{i}") for i in range(6)]
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(running(worker))
        await asyncio.sleep(1.0)  # each subscribed, its first pickup done, waiting on the marker
        before = sum(_pickups(w) for w in workers)
        for i in range(10):
            await producer.enqueue("q", "add", 1, 2, job_id=f"t{i}")
            await wait_for(lambda i=i: redis.exists(f"arq:result:t{i}"), what=f"t{i} done")  # type: ignore[misc]
        await asyncio.sleep(0.2)
        calls = sum(_pickups(w) for w in workers) - before
    # Per job: the pickup its wake-up starts. Its finish goes alone: the last pickup came back short and nothing
    # said there is more (Worker._pick_next). A spare one now and then.
    assert calls <= 15, calls


@pytest.mark.parametrize("producer_kind", ["ours", "plain arq"])
async def test_a_job_enqueued_while_another_runs_starts_at_once(redis: Redis, producer_kind: str) -> None:
    # The worker is caught up (its last pickup came back short) and busy: the outcome of the running job will go
    # without a pickup, so the new job must come through the wake-up (the marker for ours, the queue key's
    # invalidation for a plain arq producer), not through the next finish or a poll (5 s here).
    spec = make_spec(concurrency=4, poll_interval=5, lease_seconds=30)
    producer = Producer(redis, {"q": spec})
    arq = ArqRedis(redis.connection_pool, job_serializer=serializers.json_dumps)
    async with running(Worker(spec, redis, worker_id="busy")):
        await asyncio.sleep(0.5)  # subscribed, first pickup done
        for i in range(5):
            await producer.enqueue("q", "sleep", 1.0, job_id=f"long{i}")
            await wait_for(lambda i=i: runs(redis, f"long{i}"), what=f"long{i} started")  # type: ignore[misc]
            if producer_kind == "ours":
                await producer.enqueue("q", "add", 1, 2, job_id=f"short{i}")
            else:
                await arq.enqueue_job("add", 1, 2, _job_id=f"short{i}", _queue_name=spec.queue_key)
            short = await wait_for(lambda i=i: runs(redis, f"short{i}"), within=3, what=f"short{i} started")  # type: ignore[misc]
            [long_run] = await runs(redis, f"long{i}")
            assert short[0]["at"] - long_run["at"] < 0.9  # started while long{i} ran, not after it
            await wait_for(lambda i=i: redis.exists(f"arq:result:long{i}"), within=3)  # type: ignore[misc]


async def test_a_burst_wakes_the_idle_workers_one_after_another(redis: Redis) -> None:
    # One marker for the whole batch: each pickup that takes all it asked for adds it again, for the next worker.
    spec = make_spec(concurrency=2, poll_interval=5)
    producer = Producer(redis, {"q": spec})
    workers = [Worker(spec, redis, worker_id=f"burst-{i}") for i in range(4)]
    async with running(workers[0]), running(workers[1]), running(workers[2]), running(workers[3]):
        await asyncio.sleep(1.0)
        await producer.enqueue_many("q", [JobRequest(function="sleep", args=[0.05], job_id=f"b{i}") for i in range(40)])
        await wait_for(lambda: _eq(redis.llen("finished"), 40), within=10, what="all finished")
    ran_on = {json.loads(line)["worker"] for i in range(40) for line in await redis.lrange(f"runs:b{i}", 0, -1)}
    assert ran_on == {f"burst-{i}" for i in range(4)}


async def _bzpopmin_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_bzpopmin", {}).get("calls", 0))


async def test_a_worker_busy_with_full_pickups_leaves_the_marker_alone(redis: Redis) -> None:
    # While its pickups come back full, the lanes pick again at once: a wait on the marker would only pop the one
    # each capped pickup adds back (a BZPOPMIN and a wake-up per pickup: no-op throughput 15 % lower).
    spec = make_spec(concurrency=10)
    producer = Producer(redis, {"q": spec})
    await producer.enqueue_many("q", [JobRequest(function="add", args=[1, 2], job_id=f"n{i}") for i in range(2000)])
    await redis.config_resetstat()
    async with running(Worker(spec, redis)):
        await wait_for(lambda: _eq(redis.zcard(QueueKeys.for_queue("q", spec.queue_key).completed), 2000), within=30)
        calls = await _bzpopmin_calls(redis)
    # 2,000 jobs in pickups of at most 5: 400 or more full pickups. The waits: the first, and one after the end.
    assert calls <= 5, calls


async def _eq(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def test_failure_is_retried_with_backoff_in_its_band_then_dead_with_full_entry(redis: Redis) -> None:
    spec = make_spec(max_tries=3, backoff={"strategy": "fixed", "delay": 60, "jitter": 0})
    k = QueueKeys.for_queue("q", spec.queue_key)
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "fail", "bad input", job_id="f1", priority=0)
    payload = await redis.get(job_key("f1"))
    async with running(Worker(spec, redis)):
        for attempt in (1, 2):
            before = round(time.time() * 1000)
            await wait_for(lambda: redis.exists(error_key("f1")), what=f"retry {attempt}")
            score = int(await redis.zscore(k.queue, "f1"))
            # Retry due in 60 s, still in the urgent band (priority 0), not in the normal one.
            priority, ready_at = scores.split_score(score, spec)
            assert priority == 0
            assert before + 59_000 <= ready_at <= round(time.time() * 1000) + 60_000
            error = json.loads(await redis.get(error_key("f1")))
            assert error["error"] == "ValueError: bad input" and error["attempt"] == attempt
            assert not await redis.exists(in_progress_key("f1"))
            # Skip the 60 s wait: make the retry due now and wake the worker.
            await redis.delete(error_key("f1"))
            await redis.zadd(k.queue, {"f1": scores.job_score(round(time.time() * 1000), 0, spec)})
            await redis.publish(k.wake, "1")
        entry = await wait_for(lambda: dead_entry(redis, spec, "f1"), what="dead-letter entry")
    assert [r["try"] for r in await runs(redis, "f1")] == [1, 2, 3]
    assert entry.function == "fail" and entry.args == ["bad input"] and entry.kwargs == {}
    assert entry.attempts == 3 and entry.error == "ValueError: bad input"
    assert entry.traceback is not None and "raise ValueError(message)" in entry.traceback
    assert entry.priority == 0 and entry.queue == "q"
    assert base64.b64decode(entry.payload_b64 or "") == payload
    assert await redis.zscore(k.dlq_index, "f1") is not None
    assert await redis.zcard(k.queue) == 0
    assert await redis.exists(job_key("f1"), retry_key("f1"), error_key("f1"), in_progress_key("f1")) == 0


async def test_timeout_counts_as_a_failed_try(redis: Redis) -> None:
    spec = make_spec(job_timeout=0.3, max_tries=2, backoff={"strategy": "fixed", "delay": 30, "jitter": 0})
    await Producer(redis, {"q": spec}).enqueue("q", "sleep", 10, job_id="slow")
    async with running(Worker(spec, redis)):
        raw = await wait_for(lambda: redis.get(error_key("slow")), what="timeout recorded")
    assert json.loads(raw)["error"] == "timed out after 0.3s"
    assert await redis.llen("finished") == 0
    _, ready_at = scores.split_score(await redis.zscore(spec.queue_key, "slow"), spec)
    assert ready_at > time.time() * 1000 + 25_000


async def test_retry_exception_defers_by_its_own_delay(redis: Redis) -> None:
    spec = make_spec(max_tries=5)
    await Producer(redis, {"q": spec}).enqueue("q", "retry_later", 42, job_id="r1")
    async with running(Worker(spec, redis)):
        await wait_for(lambda: redis.exists(error_key("r1")), what="retry recorded")
    _, ready_at = scores.split_score(await redis.zscore(spec.queue_key, "r1"), spec)
    assert 40_000 < ready_at - time.time() * 1000 <= 42_000
    assert int(await redis.get(retry_key("r1"))) == 1


async def test_poison_jobs_go_to_the_dead_letter_store_at_once(redis: Redis) -> None:
    spec = make_spec(max_tries=5)
    k = QueueKeys.for_queue("q", spec.queue_key)
    now = round(time.time() * 1000)
    await redis.set(job_key("garbage"), b"\x80\x04not json at all")  # what arq's default (pickle) producer writes
    stranger = serializers.json_dumps({"f": "rm_rf", "a": [1], "k": {}, "t": None, "et": now})
    await redis.set(job_key("stranger"), stranger)
    await redis.zadd(k.queue, {"garbage": now, "stranger": now, "ghost": now})  # ghost: no payload at all
    async with running(Worker(spec, redis)):
        entries = [await wait_for(lambda j=j: dead_entry(redis, spec, j), what=j) for j in ("garbage", "stranger")]
        ghost = await wait_for(lambda: dead_entry(redis, spec, "ghost"), what="ghost")
    garbage, stranger = entries
    assert garbage.error.startswith("undecodable payload (json)") and garbage.attempts == 1
    assert "looks pickled" in garbage.error
    assert base64.b64decode(garbage.payload_b64 or "") == b"\x80\x04not json at all"
    assert stranger.error.startswith("unknown function 'rm_rf'") and stranger.args == [1]
    assert ghost.error.startswith("payload missing") and ghost.payload_b64 is None
    assert await redis.zcard(k.queue) == 0


async def test_plain_arq_producer_reads_the_real_error_of_its_pickled_job_dead_on_a_json_queue(redis: Redis) -> None:
    # arq's default client pickles jobs and unpickles results. Its job cannot run on a JSON queue; what it
    # reads back must be a failed result that raises the reason, not a DeserializationError.
    spec = make_spec(max_tries=5)
    arq_default = ArqRedis(connection_pool=redis.connection_pool)
    job = await arq_default.enqueue_job("add", 1, 2, _job_id="from-arq", _queue_name=spec.queue_key)
    assert job is not None
    async with running(Worker(spec, redis)):
        await wait_for(lambda: dead_entry(redis, spec, "from-arq"), what="dead entry")
    info = await job.result_info()  # arq's own deserializer: pickle.loads
    assert info is not None and info.success is False and info.job_id == "from-arq"
    with pytest.raises(JobExecutionFailed, match=r"undecodable payload \(json\).*looks pickled"):
        await job.result(timeout=1)
    # arq has no "failed" status: "complete" is its word for "a result is there" (success or not).
    assert await job.status() == JobStatus.complete
    # A JSON producer's dead job keeps a JSON result: whoever wrote JSON reads JSON.
    await redis.set(job_key("not-a-job"), b'["a list, not a job"]')
    await redis.zadd(spec.queue_key, {"not-a-job": time.time() * 1000})
    async with running(Worker(spec, redis)):
        await wait_for(lambda: dead_entry(redis, spec, "not-a-job"), what="dead entry")
    as_json = Job("not-a-job", redis, _queue_name=spec.queue_key, _deserializer=serializers.json_loads)
    with pytest.raises(SerializationError, match="undecodable payload"):
        await as_json.result(timeout=1)


async def test_worker_lost_tries_exhausted_goes_dead_with_last_error(redis: Redis) -> None:
    spec = make_spec(max_tries=2)
    await Producer(redis, {"q": spec}).enqueue("q", "add", 1, 2, job_id="orphan")
    # Two earlier tries whose workers died: the try counter is at max_tries, the lease long gone.
    await redis.set(retry_key("orphan"), 2)
    await redis.set(error_key("orphan"), json.dumps({"error": "blocked the event loop for 9.0s", "attempt": 2}))
    async with running(Worker(spec, redis)):
        entry = await wait_for(lambda: dead_entry(redis, spec, "orphan"), what="dead entry")
    assert entry.error.startswith("tries exhausted: worker lost while running it")
    assert "last error: blocked the event loop for 9.0s" in entry.error
    assert entry.attempts == 2
    assert await runs(redis, "orphan") == []


async def test_priorities_run_most_urgent_first(redis: Redis) -> None:
    spec = make_spec(concurrency=1, priority_levels=3)
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "record", job_id="low", priority=2)
    await producer.enqueue("q", "record", job_id="normal")
    await producer.enqueue("q", "record", job_id="urgent", priority=0)
    await ArqRedis(connection_pool=redis.connection_pool, job_serializer=serializers.json_dumps).enqueue_job(
        "record", _job_id="plain", _queue_name=spec.queue_key
    )
    async with running(Worker(spec, redis)):
        await wait_for(lambda: _eq(redis.llen("order"), 4), what="all ran")
    assert [x.decode() for x in await redis.lrange("order", 0, -1)] == ["urgent", "normal", "plain", "low"]


async def test_paused_queue_is_not_picked(redis: Redis) -> None:
    spec = make_spec()
    k = QueueKeys.for_queue("q", spec.queue_key)
    await redis.set(k.paused, 1)
    await Producer(redis, {"q": spec}).enqueue("q", "record", job_id="held")
    async with running(Worker(spec, redis)):
        await asyncio.sleep(0.5)  # several poll intervals and a wake: still not picked
        assert await redis.llen("order") == 0
        assert not await redis.exists(in_progress_key("held"))
        await redis.delete(k.paused)
        await wait_for(lambda: redis.llen("order"), what="picked after unpause")


async def test_a_resume_wakes_a_worker_that_held_off_while_paused(redis: Redis) -> None:
    # A long poll: without the resume's wake-up getting through, the job would wait up to 30 s.
    spec = make_spec(poll_interval=30)
    await queue_control.pause(redis, spec)
    async with running(Worker(spec, redis)) as worker:
        await Producer(redis, {"q": spec}).enqueue("q", "record", job_id="held")  # its wake-up meets the pause
        await wait_for(lambda: _holding(worker), what="the worker holding off after seeing the pause")
        assert await redis.llen("order") == 0
        await queue_control.resume(redis, spec)
        await wait_for(lambda: redis.llen("order"), within=5, what="picked at the resume, not the next poll")


async def _holding(worker: Worker) -> bool:
    return worker._hold_until > time.monotonic()


async def test_deferred_job_runs_at_its_time_and_progress_is_stored(redis: Redis) -> None:
    spec = make_spec(poll_interval=5)  # a long poll: only the deferred-time wake can start it in time
    producer = Producer(redis, {"q": spec})
    async with running(Worker(spec, redis)):
        await asyncio.sleep(0.1)
        enqueued = time.time()
        await producer.enqueue("q", "record", job_id="later", defer_seconds=0.4)
        await producer.enqueue("q", "progress", job_id="p1")
        await wait_for(lambda: redis.llen("order"), within=2, what="deferred job")
        started = (await runs(redis, "later"))[0]["at"]
    assert enqueued + 0.39 <= started < enqueued + 1.5
    progress = Progress.model_validate_json(await redis.get(progress_key("p1")))
    assert progress.percent == 50 and progress.message == "half way"
    assert 0 < await redis.pttl(progress_key("p1")) <= spec.retention.completed_seconds * 1000


async def test_drain_lets_running_jobs_finish(redis: Redis) -> None:
    spec = make_spec(concurrency=2)
    await Producer(redis, {"q": spec}).enqueue("q", "sleep", 0.4, job_id="short")
    worker = Worker(spec, redis)
    task = asyncio.create_task(worker.run())
    await wait_for(lambda: redis.exists(in_progress_key("short")), what="started")
    worker.request_drain()
    # Enqueued after the drain began (enqueued first, its wake message could win the race with the drain on a
    # busy machine, and the job would rightly run).
    await Producer(redis, {"q": spec}).enqueue("q", "sleep", 0.1, job_id="after-drain")
    await asyncio.wait_for(task, 5)
    assert [x.decode() for x in await redis.lrange("finished", 0, -1)] == ["short"]
    # Picked after the drain began: never. Still queued for the next worker.
    assert await redis.zscore(spec.queue_key, "after-drain") is not None
    assert not await redis.exists(in_progress_key("after-drain"))


async def test_drain_timeout_puts_back_running_jobs_with_the_try_uncounted(redis: Redis) -> None:
    spec = make_spec(priority_levels=3)
    await Producer(redis, {"q": spec}).enqueue("q", "sleep", 30, job_id="long", priority=2)
    worker = Worker(spec, redis, drain_timeout=0.2)
    task = asyncio.create_task(worker.run())
    await wait_for(lambda: redis.exists(in_progress_key("long")), what="started")
    worker.request_drain()
    await asyncio.wait_for(task, 5)
    k = QueueKeys.for_queue("q", spec.queue_key)
    priority, ready_at = scores.split_score(await redis.zscore(k.queue, "long"), spec)
    assert priority == 2 and abs(ready_at - time.time() * 1000) < 2000
    assert not await redis.exists(in_progress_key("long"))
    # The cut-short try does not count: back to 0 (kept, not deleted: it also says an event announced the job).
    assert await redis.get(retry_key("long")) == b"0"
    assert await redis.exists(job_key("long"))
    # The next worker runs it as its first try.
    async with running(Worker(spec, redis, drain_timeout=0.2)):
        await wait_for(lambda: _eq(redis.llen("runs:long"), 2), what="rerun")
    assert [r["try"] for r in await runs(redis, "long")] == [1, 1]


async def test_leases_and_worker_heartbeat_track_running_jobs(redis: Redis) -> None:
    spec = make_spec(lease_seconds=0.6)
    k = QueueKeys.for_queue("q", spec.queue_key)
    await Producer(redis, {"q": spec}).enqueue("q", "sleep", 1.5, job_id="tracked")
    worker = Worker(spec, redis)

    async def lease() -> float | None:  # a running job is parked in its queue under its lease expiry
        score = await redis.zscore(k.queue, "tracked")
        return None if score is None else scores.lease_of(score)

    async with running(worker):
        await wait_for(lambda: redis.exists(in_progress_key("tracked")), what="started")
        first = await lease()
        assert first is not None and first > time.time() * 1000
        await asyncio.sleep(0.9)  # past the first lease: the heartbeat renewed it
        renewed = await lease()
        assert renewed is not None and renewed > first
        # The ownership record: the job's queue score, the try it runs and the token of the pickup that holds it.
        score, job_try, token = (await redis.get(in_progress_key("tracked"))).decode().split(" ", 2)
        # The try counter holds the tries before this one until the lease ends: none before a first try (our
        # producer marks the payload, not a counter, to say an event announced the job).
        assert job_try == "1" and await redis.get(retry_key("tracked")) is None
        assert token.startswith(worker.worker_id + ".")
        # Its own score, its place in line (the queue holds its lease): normal priority, ready when enqueued.
        priority, ready_ms = scores.split_score(int(score), spec)
        assert priority == spec.normal_priority and abs(ready_ms - time.time() * 1000) < 5000
        assert await redis.zscore(k.workers, worker.worker_id) > time.time() * 1000
        await wait_for(lambda: redis.llen("finished"), what="finished")
        await wait_for(lambda: _eq(redis.zscore(k.queue, "tracked"), None), what="finished job out of the queue")
        assert await redis.exists(k.active) == 0  # leases live in the queue: the older `active` set is never written
    assert await redis.zscore(k.workers, worker.worker_id) is None


async def test_probes_and_metrics(redis: Redis) -> None:
    spec = make_spec()
    metrics = WorkerMetrics("q", spec.concurrency)
    health = Health(redis_unreachable_seconds=60)
    port = free_port()
    runner = await start_server(build_app(health, metrics), "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    producer = Producer(redis, {"q": spec})
    try:
        async with aiohttp.ClientSession() as http:
            assert (await http.get(f"{base}/readyz")).status == 503  # not started yet
            worker = Worker(spec, redis, metrics=metrics, health=health)
            async with running(worker):
                await wait_for(lambda: _ok(http, f"{base}/readyz"), what="ready")
                await producer.enqueue("q", "add", 1, 1, job_id="m1")
                await producer.enqueue("q", "fail", job_id="m2")
                await wait_for(lambda: redis.exists(error_key("m2")), what="m2 retried")
                await wait_for(lambda: redis.zscore("arqscale:q:completed", "m1"), what="m1")
                text = await (await http.get(f"{base}/metrics")).text()
                worker.request_drain()
                assert (await http.get(f"{base}/readyz")).status == 503
                assert (await http.get(f"{base}/livez")).status == 200
    finally:
        await runner.cleanup()
    assert 'arqscale_worker_jobs_total{outcome="complete",queue="q"} 1.0' in text
    assert 'arqscale_worker_jobs_total{outcome="retried",queue="q"} 1.0' in text
    assert 'arqscale_worker_job_duration_seconds_count{queue="q"} 2.0' in text
    assert 'arqscale_worker_job_wait_seconds_count{queue="q"} 2.0' in text
    assert 'arqscale_worker_jobs_in_flight{queue="q"} 0.0' in text
    assert 'arqscale_worker_redis_up{queue="q"} 1.0' in text


async def _ok(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url) as response:
        return response.status == 200


def test_health_liveness_fails_after_redis_unreachable_threshold() -> None:
    health = Health(redis_unreachable_seconds=0.05, started=True)
    assert health.live()[0] and health.ready()[0]
    health.redis_failed(ConnectionError("refused"))
    assert health.live()[0] and not health.ready()[0]  # down, but not yet for long
    time.sleep(0.06)
    ok, why = health.live()
    assert not ok and "redis unreachable" in why and "refused" in why
    health.redis_ok()
    assert health.live()[0] and health.ready()[0]


async def test_many_jobs_all_complete_once(redis: Redis) -> None:
    count = 300
    spec = make_spec(concurrency=50)
    producer = Producer(redis, {"q": spec})
    await producer.enqueue_many("q", [JobRequest(function="add", args=[i, 1], job_id=f"n{i}") for i in range(count)])
    async with running(Worker(spec, redis)):
        await wait_for(lambda: _eq(redis.zcard("arqscale:q:completed"), count), what="all completed")
    assert await redis.zcard(spec.queue_key) == 0
    pipe = redis.pipeline()
    for i in range(count):
        pipe.llen(f"runs:n{i}")
    assert set(await pipe.execute()) == {1}


async def test_retention_trims_completed_and_dead_letter_indexes(redis: Redis) -> None:
    spec = make_spec(retention={"completed_max": 2, "failed_max": 1}, max_tries=1)
    k = QueueKeys.for_queue("q", spec.queue_key)
    producer = Producer(redis, {"q": spec})
    async with running(Worker(spec, redis, worker_id="w-trim")):
        for i in range(5):
            await producer.enqueue("q", "add", i, 1, job_id=f"ok{i}")
            await wait_for(lambda i=i: redis.exists(f"arq:result:ok{i}"), what=f"ok{i}")
        for i in range(3):
            await producer.enqueue("q", "fail", job_id=f"bad{i}")
            await wait_for(lambda i=i: redis.zscore(k.dlq_index, f"bad{i}"), what=f"bad{i}")
        # A crashed worker's leftovers: an expired lease (in the `active` set of a worker from before the leases
        # moved into the queue) and an expired worker heartbeat.
        await redis.zadd(k.active, {"ghost": 1})
        await redis.zadd(k.workers, {"dead-worker": 1})
        await wait_for(lambda: _eq(redis.zscore(k.active, "ghost"), None), what="expired lease removed")
        await wait_for(lambda: _eq(redis.zscore(k.workers, "dead-worker"), None), what="expired worker removed")
    assert [x.decode() for x in await redis.zrange(k.completed, 0, -1)] == ["ok3", "ok4"]
    assert [x.decode() for x in await redis.zrange(k.dlq_index, 0, -1)] == ["bad2"]
    assert list(await redis.hkeys(k.dlq)) == [b"bad2"]
    # A trimmed entry takes its failed result along; the kept one has arq's failed result.
    assert await redis.exists("arq:result:bad0", "arq:result:bad1") == 0
    assert serializers.json_loads(await redis.get("arq:result:bad2"))["s"] is False
    assert 0 < await redis.pttl("arq:result:bad2") <= spec.retention.failed_seconds * 1000
    # completed_max bounds the results themselves: a trimmed id's result key went with it (issue 10), the
    # kept ones keep their own TTL from retention.completed_seconds.
    assert await redis.exists(*(f"arq:result:ok{i}" for i in range(3))) == 0
    assert 0 < await redis.pttl("arq:result:ok4") <= spec.retention.completed_seconds * 1000


async def test_a_crashed_background_loop_drains_the_worker(redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    spec = make_spec()
    worker = Worker(spec, redis)

    async def broken_heartbeat(*_: Any) -> list[str]:
        raise RuntimeError("bug in the heartbeat")

    worker.ops.heartbeat = broken_heartbeat  # type: ignore[method-assign]
    await asyncio.wait_for(worker.run(), 5)  # returns on its own: drained
    assert worker.health.draining
    assert any("heartbeat loop died" in r.getMessage() for r in caplog.records)


async def test_an_emptied_script_cache_costs_nothing(redis: Redis) -> None:
    """A restarted Redis has no scripts: the pipelined finish/pickup answers NOSCRIPT and loads them again."""
    spec = make_spec(concurrency=4)
    producer = Producer(redis, {"q": spec})
    await producer.enqueue_many("q", [JobRequest(function="sleep", args=[0.02], job_id=f"s{i}") for i in range(40)])
    async with running(Worker(spec, redis)):
        for _ in range(3):
            await wait_for(lambda: redis.llen("finished"), what="progress")
            await redis.script_flush()
            await asyncio.sleep(0.05)
        await wait_for(lambda: _eq(redis.llen("finished"), 40), what="all finished")
        await wait_for(lambda: _eq(redis.zcard("arqscale:q:completed"), 40), what="all recorded")
    assert await redis.zcard(spec.queue_key) == 0 and await redis.hlen("arqscale:q:dlq") == 0
    assert sorted(await redis.lrange("finished", 0, -1)) == sorted(f"s{i}".encode() for i in range(40))


async def test_rate_limited_queue_with_a_far_deferred_job_still_wakes_for_new_jobs(redis: Redis) -> None:
    spec = make_spec(rate_limit={"max_jobs": 100, "interval": 1}, poll_interval=5)
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "record", job_id="next-hour", defer_seconds=3600)
    async with running(Worker(spec, redis)):
        await asyncio.sleep(0.3)  # the worker has seen only the deferred job
        await producer.enqueue("q", "record", job_id="now")
        await wait_for(lambda: redis.llen("order"), within=1.5, what="new job picked at once")
    assert await redis.lrange("order", 0, -1) == [b"now"]


async def test_tasks_chain_jobs_through_ctx_redis_like_under_arq(redis: Redis) -> None:
    spec = make_spec()
    await Producer(redis, {"q": spec}).enqueue("q", "chain", 20, 22, job_id="first")
    async with running(Worker(spec, redis)):
        first = Job("first", redis, _queue_name=spec.queue_key, _deserializer=serializers.json_loads)
        assert await first.result(timeout=5, poll_delay=0.05) == "first-next"
        follow_up = Job("first-next", redis, _queue_name=spec.queue_key, _deserializer=serializers.json_loads)
        assert await follow_up.result(timeout=5, poll_delay=0.05) == 42
    # Written as JSON (the queue's serializer), never pickled.
    assert await redis.exists(job_key("first-next")) == 0
    assert serializers.json_loads(await redis.get("arq:result:first-next"))["r"] == 42


async def test_a_success_under_a_dead_jobs_id_removes_its_stale_entry(redis: Redis) -> None:
    """A dead-letter entry and a failed result go together: once the id has succeeded, the entry is stale."""
    spec = make_spec()
    k = QueueKeys.for_queue("q", spec.queue_key)
    # The entry of an earlier job under this id, whose failed result has expired.
    await redis.hset(
        k.dlq, "again", DeadJob(job_id="again", queue="q", attempts=1, error="e", failed_at=1).model_dump_json()
    )
    await redis.zadd(k.dlq_index, {"again": 1000})
    assert (await Producer(redis, {"q": spec}).enqueue("q", "add", 1, 2, job_id="again")).created
    async with running(Worker(spec, redis)):
        await wait_for(lambda: redis.exists("arq:result:again"), what="result")
    assert await dead_entry(redis, spec, "again") is None and await redis.zcard(k.dlq_index) == 0
    assert serializers.json_loads(await redis.get("arq:result:again"))["r"] == 3


async def test_drain_with_redis_gone_stops_at_the_drain_timeout_with_outcomes_unwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A local stack's Redis stopping together with its workers must not leave them retrying forever."""
    server = RedisServer(tmp_path / "redis").start()
    client = Redis.from_url(server.url, socket_timeout=2)
    try:
        spec = make_spec(concurrency=2)
        await Producer(client, {"q": spec}).enqueue_many(
            "q", [JobRequest(function="sleep", args=[0.3], job_id=f"z{i}") for i in range(2)]
        )
        worker = Worker(spec, client, drain_timeout=1.0)
        task = asyncio.create_task(worker.run())
        await wait_for(lambda: _eq(client.get("in_flight"), b"2"), what="both jobs running")
        server.stop()
        worker.request_drain()
        started = time.monotonic()
        await asyncio.wait_for(task, 10)  # the jobs finish, their outcomes cannot be written
        assert 0.9 < time.monotonic() - started < 5
    finally:
        await client.aclose()
        server.kill()
    assert any("2 outcome(s) not recorded" in r.getMessage() for r in caplog.records)
