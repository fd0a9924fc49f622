"""Per-key limits with real ``arqscale worker`` processes and a real Redis (docs/design.md, "Per-key limits"):
the limits hold across processes, a killed worker's job gives its key's slot back, and plain arq producers'
jobs are keyed by their keyword argument."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from arqscale.core.cancellation import CancelOutcome
from arqscale.core.job_status import JobStatusReader
from arqscale.core.models import JobRequest, JobState
from arqscale.core.producer import Producer
from arqscale.core.serializers import json_dumps
from arqscale.core.spec import parse_queues
from worker_processes import StartWorker, runs, stop_all, wait_until, worker_starter

BASE: dict[str, Any] = {
    "functions": ["worker_tasks.keyed"],
    "concurrency": 10,
    "poll_interval": 0.05,
    "job_timeout": 120,
}


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "arqscale", *args], env=env, capture_output=True, text=True, check=True
    ).stdout


async def done(redis: Redis, n: int) -> bool:
    return await redis.llen("keyed:done") >= n  # type: ignore[no-any-return]


async def test_per_key_concurrency_holds_across_two_worker_processes(redis: Redis, workers: StartWorker) -> None:
    # Three slots per process, six keyed slots in all: both processes must run alice's, bob's and carol's jobs.
    queues = {"q": {**BASE, "concurrency": 3, "group": {"key": "user_id", "concurrency": 2}}}
    producer = Producer(redis, parse_queues({"queues": queues}))
    users = ["alice", "bob", "carol"]
    await producer.enqueue_many(
        "q", [JobRequest(function="keyed", kwargs={"seconds": 0.1, "user_id": u}) for _ in range(8) for u in users]
    )
    a, b = workers(queues), workers(queues)
    await a.ready()
    await b.ready()
    await wait_until(lambda: done(redis, 24), 60, "all 24 jobs")
    for user in users:
        # Counted inside the tasks: never more than two at once, and the limit was reached (it allows two).
        assert await redis.get(f"keyed:max:{user}") == b"2", user
    pids = {line["pid"] for job in await redis.lrange("keyed:done", 0, -1) for line in await runs(redis, job.decode())}
    assert pids == {a.proc.pid, b.proc.pid}  # both processes ran jobs: the limit is shared, not per process
    assert await redis.keys("arqscale:q:g:*") == []  # nothing left behind: no slot leaked


async def test_per_key_rate_holds_in_every_window_across_two_workers(redis: Redis, workers: StartWorker) -> None:
    interval = 0.4
    queues = {"q": {**BASE, "group": {"key": "user_id", "rate_limit": {"max_jobs": 3, "interval": interval}}}}
    producer = Producer(redis, parse_queues({"queues": queues}))
    await producer.enqueue_many(
        "q", [JobRequest(function="keyed", kwargs={"seconds": 0, "user_id": u}) for _ in range(9) for u in ("u1", "u2")]
    )
    a, b = workers(queues), workers(queues)
    await a.ready()
    await b.ready()
    await wait_until(lambda: done(redis, 18), 60, "all 18 jobs")
    for user in ("u1", "u2"):
        starts = sorted(json.loads(x)["at"] for x in await redis.lrange(f"keyed:starts:{user}", 0, -1))
        assert len(starts) == 9
        # Any four starts of one key span at least a window. Starts are stamped by the task, a little after
        # the pickup that charged the window, so allow 100 ms of that delay (the window is 400 ms).
        spans = [starts[i + 3] - starts[i] for i in range(len(starts) - 3)]
        assert min(spans) >= interval * 1000 - 100, (user, spans)


async def test_a_killed_workers_job_gives_its_keys_slot_back_after_the_sweep(
    redis: Redis, workers: StartWorker
) -> None:
    queues = {"q": {**BASE, "lease_seconds": 1, "group": {"key": "user_id", "concurrency": 1}}}
    producer = Producer(redis, parse_queues({"queues": queues}))
    await producer.enqueue("q", "keyed", job_id="first", user_id="alice", hang_first=True)
    await producer.enqueue("q", "keyed", job_id="second", user_id="alice", seconds=0)
    doomed = await workers(queues).ready()
    await wait_until(lambda: runs(redis, "first"), 15, "the first job to start")
    assert await redis.hget("arqscale:q:g:held", "second") == b"alice"
    os.kill(doomed.proc.pid, signal.SIGKILL)
    await doomed.exited(10)
    survivor = await workers(queues).ready()
    # The survivor's sweep returns `first` once its lease lapses and gives alice's slot back: both finish.
    await wait_until(lambda: done(redis, 2), 30, "both jobs after the sweep")
    assert [r["pid"] for r in await runs(redis, "first")] == [doomed.proc.pid, survivor.proc.pid]
    # The rerun keeps its place in line and alice's limit still holds after the sweep: one after the other.
    order = [json.loads(x)["id"] for x in await redis.lrange("keyed:starts:alice", 0, -1)]
    assert order == ["first", "first", "second"]
    await asyncio.sleep(0.2)
    assert await redis.keys("arqscale:q:g:*") == []


async def test_plain_arq_producer_jobs_get_their_key_from_the_kwarg(
    redis: Redis, workers: StartWorker, tmp_path: Path, redis_env: dict[str, str]
) -> None:
    queues = {"q": {**BASE, "group": {"key": "user_id", "concurrency": 1}}}
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)
    await arq.enqueue_job("keyed", user_id=42, hang_first=True, _job_id="p0", _queue_name="arq:queue:q")
    for i in range(1, 4):
        await arq.enqueue_job("keyed", seconds=0.2, user_id=42, _job_id=f"p{i}", _queue_name="arq:queue:q")
    await workers(queues).ready()
    # One of user 42's jobs runs; the others wait in its key's set, keyed "42" from the payload.
    await wait_until(lambda: redis.hlen("arqscale:q:g:held"), 15, "jobs held by key 42")
    assert set((await redis.hgetall("arqscale:q:g:held")).values()) == {b"42"}
    # A held job is waiting, not lost: its status says so and names its key (core, CLI and, in
    # tests/api/test_api_groups.py, the API).
    [status] = await JobStatusReader(redis, parse_queues({"queues": queues})).read_many(["p3"])
    assert (status.state, status.held, status.group, status.function) == (JobState.QUEUED, True, "42", "keyed")
    assert status.scheduled_for is not None and status.priority == 1
    env = {**redis_env, "ARQSCALE_QUEUES_FILE": str(tmp_path / "queues.yaml")}
    shown = await asyncio.to_thread(cli, env, "status", "p3")
    assert "state      queued (held back by its key's limit)" in shown and "key        42" in shown
    listed = await asyncio.to_thread(cli, env, "status", "q", "--state", "waiting", "--json")
    assert json.loads(listed)["held"] == 3
    # p0 hangs for a minute: cancel it (found by id, though it runs), which frees the key's slot for the rest.
    assert await Producer(redis, parse_queues({"queues": queues})).cancel("p0") is CancelOutcome.CANCELLING
    await wait_until(lambda: done(redis, 3), 30, "the three other jobs")
    assert (await JobStatusReader(redis, parse_queues({"queues": queues})).read("p0")).state is JobState.CANCELLED
    assert await redis.get("keyed:max:42") == b"1"


async def test_another_key_runs_at_the_first_pickup_behind_a_plain_arq_burst_of_10000(
    redis: Redis, workers: StartWorker
) -> None:
    # Workers that poll once an hour (and look at held keys again once a lease, an hour): only their first
    # pickup after start-up can run bob's job in this test. A pickup moves at most HOLD_MAX of alice's jobs
    # aside per script call; the worker calls again at once while the script says it stopped at that budget,
    # so bob's job is reached within that first pickup.
    queues = {
        "q": {**BASE, "poll_interval": 3600, "lease_seconds": 3600, "group": {"key": "user_id", "concurrency": 1}}
    }
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)
    n = 10_000
    for start in range(0, n, 500):
        await asyncio.gather(
            *(
                # alice's first job runs for a minute: her key stays at its limit for the whole test.
                arq.enqueue_job(
                    "keyed", user_id="alice", seconds=60 if i == 0 else 0, _job_id=f"a{i}", _queue_name="arq:queue:q"
                )
                for i in range(start, start + 500)
            )
        )
    await arq.enqueue_job("keyed", user_id="bob", seconds=0, _job_id="b0", _queue_name="arq:queue:q")
    assert await redis.zcard("arq:queue:q") == n + 1
    a, b = workers(queues), workers(queues)
    await a.ready()
    await b.ready()
    await wait_until(lambda: done(redis, 1), 60, "bob's job (an hour's poll otherwise)")
    assert await redis.lrange("keyed:done", 0, -1) == [b"b0"]
    # Every one of alice's other jobs is accounted for: held in her key's set, none lost, none run.
    assert await redis.hlen("arqscale:q:g:held") + await redis.zcard("arq:queue:q") - 1 == n - 1
    assert await redis.zcard("arqscale:q:g:wait:alice") == n - 1
    assert await redis.get("keyed:max:alice") == b"1"
