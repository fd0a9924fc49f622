"""Counts of jobs held by a real ``arqscale worker`` process, as the exporter serves them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import yaml
from redis.asyncio import Redis

from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from exporter_support import get, parse_exposition, running_exporter
from redis_server import free_port

TESTS = Path(__file__).resolve().parent.parent  # the shared helpers (worker_tasks, ...) live in tests/
QUEUES = {"q": {"functions": ["worker_tasks.sleep"], "concurrency": 2, "lease_seconds": 2, "poll_interval": 0.1}}
SPECS = parse_queues({"queues": QUEUES})


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def worker(redis_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    qfile = tmp_path / "queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": QUEUES}))
    env = {**redis_env, "ARQSCALE_QUEUES_FILE": str(qfile)}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    port = free_port()
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arqscale", "worker", "--queue", "q", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


async def test_running_jobs_of_a_real_worker(
    redis: Redis, redis_url: str, worker: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, port = worker

    async def worker_ready() -> bool:
        assert proc.poll() is None, "worker exited"
        try:
            return (await get(f"http://127.0.0.1:{port}/readyz"))[0] == 200
        except OSError:
            return False

    await eventually(worker_ready, 20, "worker ready")
    producer = Producer(redis, SPECS)
    # Two long jobs fill the worker's two slots; three short ones wait behind them; one is deferred.
    for i in range(2):
        await producer.enqueue("q", "sleep", 2.5, job_id=f"long{i}")
    for i in range(3):
        await producer.enqueue("q", "sleep", 0.05, job_id=f"short{i}")
    await producer.enqueue("q", "sleep", 0.05, job_id="later", defer_seconds=600)

    async with running_exporter(redis_url, SPECS, refresh_seconds=0.1) as exp:

        async def metrics() -> dict[str, float]:
            return parse_exposition((await get(f"http://127.0.0.1:{exp.http_port}/metrics"))[1])

        async def two_running() -> bool:
            return (await metrics()).get('bullmq_queue_active{queue="q"}') == 2

        await eventually(two_running, 10, "the worker's two running jobs counted as active")
        m = await metrics()
        assert m['bullmq_queue_waiting{queue="q"}'] == 3  # running jobs are not counted as waiting
        assert m['bullmq_queue_delayed{queue="q"}'] == 1
        assert m['arqscale_queue_backlog{queue="q"}'] == 5
        assert await redis.zcard("arq:queue:q") == 6  # what a ZCARD-based scaler would report

        async def all_done() -> bool:
            return (await metrics()).get('bullmq_queue_completed{queue="q"}') == 5

        await eventually(all_done, 20, "the five ready jobs completed")
        m = await metrics()
        assert (m['bullmq_queue_active{queue="q"}'], m['bullmq_queue_waiting{queue="q"}']) == (0, 0)
        assert m['arqscale_queue_backlog{queue="q"}'] == 0
        assert m['bullmq_queue_delayed{queue="q"}'] == 1
