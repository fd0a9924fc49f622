"""A worker and an exporter ride out a whole minute without Redis: no restart, no job lost.

Issue 5's floor: "Workers and exporter survive Redis being down for a minute and carry on without a
restart and without losing jobs; the exporter reports the outage (and the External Metrics API
answers 503, so the HPA holds)." Real processes, a real redis-server stopped and started again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys, result_key
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.scores import LEASED
from arqscale.core.spec import parse_queues
from redis_server import RedisServer, free_port
from worker_processes import WorkerProcess

TESTS = Path(__file__).resolve().parent.parent  # the shared helpers (worker_tasks, ...) live in tests/
# Long enough to be the minute the issue names; an environment variable shortens it for local iteration.
OUTAGE_SECONDS = float(os.environ.get("ARQSCALE_TEST_OUTAGE_SECONDS", "60"))
QUEUES = {"queues": {"q": {"functions": ["worker_tasks.pause"], "lease_seconds": 2, "poll_interval": 0.1}}}
METRIC = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/bullmq_queue_waiting?labelSelector=queue%3Dq"


async def status_of(url: str) -> tuple[int | None, str]:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(url, ssl=False) as response,
        ):
            return response.status, await response.text()
    except (TimeoutError, aiohttp.ClientError):
        return None, ""


async def eventually(check: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(OUTAGE_SECONDS + 180)
async def test_worker_and_exporter_ride_out_a_minute_without_redis(tmp_path: Path, redis_env: dict[str, str]) -> None:
    server = RedisServer(tmp_path / "redis", aof=True).start()
    queues_file = tmp_path / "queues.yaml"
    queues_file.write_text(yaml.safe_dump(QUEUES))
    env = redis_env | {
        "REDIS_URL": server.url,
        "ARQSCALE_QUEUES_FILE": str(queues_file),
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent / "src")]),
        # Liveness would (rightly) restart a pod cut off for longer than this; here we prove no restart is needed.
        "ARQSCALE_REDIS_UNREACHABLE_SECONDS": str(OUTAGE_SECONDS * 3),
    }
    exporter_port, api_port = free_port(), free_port()
    exporter, exporter_log = start_exporter(env, exporter_port, api_port, tmp_path / "exporter.log")
    worker = await WorkerProcess(env, "q", tmp_path / "worker.log").ready()
    redis = Redis.from_url(server.url)
    metrics_url = f"http://127.0.0.1:{exporter_port}/metrics"
    api_url = f"https://127.0.0.1:{api_port}{METRIC}"
    try:
        await eventually(lambda: _code_is(metrics_url, 200), 30, "exporter serving /metrics")
        spec = parse_queues(QUEUES)["q"]
        producer = Producer(redis, {"q": spec})
        # Running through the outage, ready during it, and waiting behind them: every kind must survive.
        running = [JobRequest(function="pause", args=[4], job_id=f"run-{i}") for i in range(5)]
        deferred = [JobRequest(function="pause", args=[0.1], job_id=f"later-{i}", defer_seconds=3) for i in range(5)]
        await producer.enqueue_many("q", running + deferred)
        await eventually(lambda: _running_at_least(redis, spec.queue_key, 5), 15, "five jobs running")

        server.stop()
        down_at = time.monotonic()
        await eventually(lambda: _says(metrics_url, "arqscale_exporter_redis_up 0"), 15, "exporter reports the outage")
        assert (await status_of(api_url))[0] == 503, "the External Metrics API must answer 503 so the HPA holds"
        # The worker notices at its next call to Redis (a poll, 0.1 s here, or a heartbeat), which may come just
        # after the exporter's refresh did: not at the same instant.
        await eventually(lambda: _code_is(worker.url + "/readyz", 503), 5, "worker not ready while Redis is away")
        assert (await status_of(worker.url + "/livez"))[0] == 200
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        assert worker.proc.poll() is None and exporter.poll() is None, "nothing may exit while Redis is away"
        server.start()

        ids = [r.job_id for r in running + deferred if r.job_id]
        await eventually(lambda: _all_exist(redis, [result_key(i) for i in ids]), 60, "every job completed")
        await eventually(lambda: _says(metrics_url, "arqscale_exporter_redis_up 1"), 15, "exporter recovered")
        await eventually(lambda: _code_is(api_url, 200), 15, "External Metrics API recovered")
        assert (await status_of(worker.url + "/readyz"))[0] == 200
        assert worker.proc.poll() is None and exporter.poll() is None, "recovered without a restart"
        assert await redis.zcard(spec.queue_key) == 0
        assert await redis.zcard(QueueKeys.for_queue("q", spec.queue_key).dlq_index) == 0
    finally:
        await redis.aclose()
        # A worker stopped while Redis is still away keeps trying to write its outcomes for its whole drain
        # timeout (300 s): after a failure above, do not wait for that, and leave no process behind.
        for proc in (worker.proc, exporter):
            proc.terminate()
        for proc in (worker.proc, exporter):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        exporter_log.close()
        server.kill()


def start_exporter(
    env: dict[str, str], port: int, api_port: int, log: Path
) -> tuple[subprocess.Popen[bytes], BinaryIO]:
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arqscale", "exporter", "--port", str(port), "--api-port", str(api_port)],
        env=env | {"ARQSCALE_EXPORTER_HOST": "127.0.0.1", "ARQSCALE_EXPORTER_REFRESH_SECONDS": "0.2"},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return proc, out


async def _code_is(url: str, code: int) -> bool:
    return (await status_of(url))[0] == code


async def _says(url: str, line: str) -> bool:
    status, text = await status_of(url)
    return status == 200 and line in text.splitlines()


async def _running_at_least(redis: Redis, queue_key: str, n: int) -> bool:
    # Running jobs are parked in their queue under their leases (scores.LEASED).
    return int(await redis.zcount(queue_key, LEASED, "+inf")) >= n


async def _all_exist(redis: Redis, keys: list[str]) -> bool:
    try:
        return int(await redis.exists(*keys)) == len(keys)
    except OSError:
        return False
