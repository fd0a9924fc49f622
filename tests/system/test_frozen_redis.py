"""A frozen Redis (SIGSTOP: what a network partition looks like) gets 503 in seconds, not a hang.

Issue 10, point 6: with redis-server stopped, ``/healthz`` said 503 in 2 s but the ``/v1`` data routes
hung for the whole freeze. Every Redis client now has a socket timeout (the API's is 1.5 s): each data
route answers 503 within about 2 s, the worker and the exporter keep going (the worker keeps its running
job and finishes it, the exporter reports Redis down), and everything recovers on SIGCONT.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis
from test_redis_outage import _code_is, _says, eventually, start_exporter, status_of

from arqscale.core.keys import result_key
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from chaos_tasks import ArqscaleProcess
from redis_server import RedisServer, free_port
from worker_processes import WorkerProcess

TESTS = Path(__file__).resolve().parent.parent
QUEUES = {"queues": {"q": {"functions": ["worker_tasks.pause"], "lease_seconds": 10, "poll_interval": 0.1}}}
DATA_ROUTES = [
    "/v1/queues",
    "/v1/queues/q",
    "/v1/jobs/some-job",
    "/v1/queues/q/jobs?state=waiting",
    "/v1/queues/q/dead-letters",
    "/v1/queues/q/dead-letters/some-job",
]


async def timed(method: str, url: str) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
            http.request(method, url) as response,
        ):
            return response.status, time.monotonic() - started
    except (TimeoutError, aiohttp.ClientError):
        return None, time.monotonic() - started


@pytest.mark.timeout(180)
async def test_data_routes_answer_503_while_redis_is_frozen_and_all_recover(
    tmp_path: Path, redis_env: dict[str, str]
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    assert server.proc is not None
    queues_file = tmp_path / "queues.yaml"
    queues_file.write_text(yaml.safe_dump(QUEUES))
    env = redis_env | {
        "REDIS_URL": server.url,
        "ARQSCALE_QUEUES_FILE": str(queues_file),
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent / "src")]),
    }
    api_port, exporter_port, metrics_api_port = free_port(), free_port(), free_port()
    api = ArqscaleProcess(["api", "--host", "127.0.0.1", "--port", str(api_port)], env, tmp_path / "api.log")
    exporter, exporter_log = start_exporter(env, exporter_port, metrics_api_port, tmp_path / "exporter.log")
    worker = await WorkerProcess(env, "q", tmp_path / "worker.log").ready()
    redis = Redis.from_url(server.url)
    base, metrics = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{exporter_port}/metrics"
    frozen = False
    try:
        await eventually(lambda: _code_is(base + "/v1/queues", 200), 30, "API serving")
        await eventually(lambda: _says(metrics, "arqscale_exporter_redis_up 1"), 30, "exporter serving")
        # A job that runs through the freeze (its lease outlasts it) and one that waits behind it.
        producer = Producer(redis, parse_queues(QUEUES))
        running = await producer.enqueue("q", "pause", 4)
        await asyncio.sleep(0.5)
        waiting = await producer.enqueue("q", "pause", 0.1)

        server.proc.send_signal(signal.SIGSTOP)
        frozen = True
        for route in DATA_ROUTES:
            status, took = await timed("GET", base + route)
            assert status == 503 and took < 2.5, (route, status, took)
        status, took = await timed("POST", base + "/v1/queues/q/pause")
        assert status == 503 and took < 2.5, ("pause", status, took)
        assert (await status_of(base + "/healthz"))[0] == 503
        await eventually(lambda: _says(metrics, "arqscale_exporter_redis_up 0"), 15, "exporter reports the freeze")
        assert (await status_of(worker.url + "/livez"))[0] == 200
        await asyncio.sleep(3)
        assert worker.proc.poll() is None and exporter.poll() is None and api.alive()

        server.proc.send_signal(signal.SIGCONT)
        frozen = False
        await eventually(lambda: _code_is(base + "/v1/queues", 200), 15, "API recovered")
        await eventually(lambda: _says(metrics, "arqscale_exporter_redis_up 1"), 15, "exporter recovered")
        for job in (running, waiting):
            await eventually(lambda job=job: redis.exists(result_key(job.job_id)), 30, f"{job.job_id} completed")
        assert worker.proc.poll() is None, "the worker carried on without a restart"
    finally:
        if frozen:
            server.proc.send_signal(signal.SIGCONT)
        await redis.aclose()
        for proc in (worker.proc, exporter, api.proc):
            proc.terminate()
        for proc in (worker.proc, exporter, api.proc):
            proc.wait(30)
        exporter_log.close()
        api.close()
        server.kill()
