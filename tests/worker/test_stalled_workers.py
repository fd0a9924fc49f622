"""The ownership protocol with real ``arqscale worker`` processes: a loop blocked past its lease, a clock
that runs ahead or behind, replies lost on the wire, a task that swallows its cancellation, and what a
worker reports at start-up (an evicting Redis, jobs stranded outside the priority bands)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from arqscale.core.counts import CountsReader
from arqscale.core.keys import QueueKeys, result_key
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.serializers import json_loads
from arqscale.core.spec import QueueSpec, parse_queues
from redis_server import RedisServer
from reply_dropping_proxy import ReplyDroppingProxy
from worker_processes import TESTS, StartWorker, WorkerProcess, runs, stop_all, wait_until, worker_starter

BASE = {
    "functions": [
        "worker_tasks.block_first_try",
        "worker_tasks.sleep",
        "worker_tasks.record",
        "worker_tasks.swallow_cancel",
    ],
    "lease_seconds": 1,
    "poll_interval": 0.1,
    "job_timeout": 20,
}


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


def spec_of(queues: dict[str, Any]) -> QueueSpec:
    return parse_queues({"queues": queues})["q"]


async def metric(worker: WorkerProcess, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(worker.url + "/metrics") as response:
        text = await response.text()
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_a_worker_stalled_past_its_lease_writes_nothing(redis: Redis, workers: StartWorker) -> None:
    queues = {"q": BASE}
    spec = spec_of(queues)
    stalled = await workers(queues).ready()
    await Producer(redis, {"q": spec}).enqueue("q", "block_first_try", 4, job_id="stall")
    await wait_until(lambda: redis.exists("runs:stall"), 5, "first try started")
    other = await workers(queues).ready()  # its pickups sweep the expired lease and run try 2
    raw = await wait_until(lambda: redis.get(result_key("stall")), 15, "a result")
    assert json_loads(raw)["r"] == "try 2"
    await wait_until(lambda: stalled.probe("/readyz"), 10, "the stalled worker answers again")
    await asyncio.sleep(1.0)  # its heartbeat and its next finish call have run
    # The stalled worker's own success ("try 1") was refused or its copy stopped: either way, nothing it
    # wrote landed, and it says so in its metrics.
    assert json_loads(await redis.get(result_key("stall")))["r"] == "try 2"
    dropped = await metric(stalled, "arqscale_worker_stale_outcomes_total")
    stopped = await metric(stalled, "arqscale_worker_lost_leases_total")
    assert dropped + stopped >= 1, stalled.output()
    k = QueueKeys.for_queue("q", spec.queue_key)
    assert await redis.zcard(k.completed) == 1 and await redis.hlen(k.dlq) == 0
    assert await redis.zcard(spec.queue_key) == 0
    assert [r["try"] for r in await runs(redis, "stall")] == [1, 2]
    assert other.proc.poll() is None


async def test_workers_with_skewed_clocks_count_each_others_jobs_as_running(redis: Redis, workers: StartWorker) -> None:
    queues = {"q": {**BASE, "concurrency": 5}}
    spec = spec_of(queues)
    skew_path = str(TESTS / "clock_skew")
    ahead = await workers(queues, env={"PYTHONPATH": skew_path, "ARQSCALE_TEST_CLOCK_SKEW": "1.5"}).ready()
    behind = await workers(queues, env={"PYTHONPATH": skew_path, "ARQSCALE_TEST_CLOCK_SKEW": "-1.5"}).ready()
    await Producer(redis, {"q": spec}).enqueue_many(
        "q", [JobRequest(function="sleep", args=[4], job_id=f"s{i}") for i in range(10)]
    )
    await wait_until(lambda: _is(redis.get("in_flight"), b"10"), 10, "ten jobs running")
    reader = CountsReader(redis)
    for _ in range(10):  # 2 s: several heartbeats of each worker (every lease / 3)
        counts = (await reader.read({"q": spec}))["q"]
        assert (counts.active, counts.waiting, counts.delayed) == (10, 0, 0), counts
        await asyncio.sleep(0.2)
    assert ahead.proc.poll() is None and behind.proc.poll() is None
    pids = {r["pid"] for i in range(10) for r in await runs(redis, f"s{i}")}
    assert pids == {ahead.proc.pid, behind.proc.pid}


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_lost_replies_cost_no_try_and_run_nothing_twice(
    tmp_path: Path, redis_env: dict[str, str], redis: Redis, redis_server: RedisServer
) -> None:
    proxy = ReplyDroppingProxy(redis_server.port).start()
    start, started = worker_starter({**redis_env, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}, tmp_path)
    try:
        queues = {"q": {**BASE, "concurrency": 4, "max_tries": 1}}
        spec = spec_of(queues)
        worker = await start(queues).ready()
        producer = Producer(redis, {"q": spec})
        ids = [f"r{i}" for i in range(60)]
        for chunk in range(6):
            await producer.enqueue_many("q", [JobRequest(function="record", job_id=i) for i in ids[chunk::6]])
            proxy.lose_next_reply()  # a pickup, a finish, or both pipelined together
            await asyncio.sleep(0.3)
        k = QueueKeys.for_queue("q", spec.queue_key)
        await wait_until(lambda: _is(redis.zcard(k.completed), 60), 20, "every job completed")
        assert proxy.dropped >= 4, worker.output()
        assert await redis.hlen(k.dlq) == 0  # with max_tries 1, a lost pickup reply would have killed a job
        for job_id in ids:
            assert [r["try"] for r in await runs(redis, job_id)] == [1], job_id
        assert worker.proc.poll() is None
    finally:
        stop_all(started)
        proxy.stop()


async def test_a_task_that_swallows_its_cancellation_is_not_run_beside_itself(
    redis: Redis, workers: StartWorker
) -> None:
    queues = {"q": BASE}
    spec = spec_of(queues)
    first = await workers(queues, "q", "--drain-timeout", "0.5").ready()
    await Producer(redis, {"q": spec}).enqueue("q", "swallow_cancel", 30, job_id="stubborn")
    await wait_until(lambda: redis.exists("runs:stubborn"), 5, "started")
    second = await workers(queues).ready()
    first.proc.send_signal(15)
    await wait_until(lambda: redis.exists("swallowed:stubborn"), 5, "the task swallowed its cancellation")
    assert await first.exited(15) == 0, first.output()
    assert "ignored its cancellation" in first.output()
    started = await wait_until(lambda: _two_runs(redis), 10, "the job runs again")
    # It runs again, on the next try, only after the last sign of life of the stubborn copy: never beside it.
    assert started[1]["pid"] == second.proc.pid and started[1]["try"] == 2
    alive = [json.loads(x) for x in await redis.lrange("swallowed:stubborn", 0, -1)]
    assert {a["pid"] for a in alive} == {first.proc.pid}
    assert started[1]["at"] > max(a["at"] for a in alive)


async def _two_runs(redis: Redis) -> list[dict[str, Any]] | None:
    found = await runs(redis, "stubborn")
    return found if len(found) >= 2 else None


async def test_start_up_warns_of_an_evicting_redis_and_of_stranded_jobs(redis: Redis, workers: StartWorker) -> None:
    three = {"q": BASE}  # three levels, the middle one normal
    await Producer(redis, {"q": spec_of(three)}).enqueue("q", "record", job_id="urgent", priority=0)
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        shifted = {"q": {**BASE, "default_priority": 0}}
        worker = await workers(shifted).ready()
        await asyncio.sleep(0.3)
        output = worker.output()
        assert "maxmemory-policy is 'allkeys-lru'" in output
        assert "1 job(s) sit outside the configured priority bands" in output and "arqscale queue migrate q" in output
        assert await metric(worker, "arqscale_worker_stranded_jobs") == 1
        assert not await redis.exists("runs:urgent")
    finally:
        await redis.config_set("maxmemory-policy", "noeviction")


def test_queue_migrate_moves_stranded_jobs_for_a_worker_to_run(redis_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    import redis as redis_sync
    import yaml

    qfile = tmp_path / "queues.yaml"
    three = {"q": BASE}
    client = redis_sync.Redis.from_url(redis_env["REDIS_URL"])
    client.flushall()
    asyncio.run(_enqueue_urgent(redis_env["REDIS_URL"], spec_of(three)))
    qfile.write_text(yaml.safe_dump({"queues": {"q": {**BASE, "default_priority": 0}}}))
    env = {**redis_env, "ARQSCALE_QUEUES_FILE": str(qfile)}
    result = subprocess.run(
        [sys.executable, "-m", "arqscale", "queue", "migrate", "q"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "queue q: moved 1 stranded job(s) into its priority bands"
    assert client.zscore(spec_of(three).queue_key, "urgent") is not None
    client.close()


async def _enqueue_urgent(url: str, spec: QueueSpec) -> None:
    client = Redis.from_url(url)
    await Producer(client, {"q": spec}).enqueue("q", "record", job_id="urgent", priority=0)
    await client.aclose()
