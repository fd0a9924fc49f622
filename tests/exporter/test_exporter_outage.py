"""Redis killed and restarted under a running ``arqscale exporter`` process: it reports, then recovers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from exporter_support import get, parse_exposition
from redis_server import RedisServer, free_port

QUEUES_YAML = """
queues:
  email:
    functions: [tests.tasks.send_email]
  bulk:
    functions: [tests.tasks.send_email]
"""
WAITING = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/bullmq_queue_waiting"


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        await asyncio.sleep(0.1)


class ExporterProcess:
    def __init__(self, proc: asyncio.subprocess.Process, http_port: int, api_port: int, log: Path) -> None:
        self.proc, self.http_port, self.api_port, self.log = proc, http_port, api_port, log

    async def metrics(self) -> dict[str, float]:
        status, text = await get(f"http://127.0.0.1:{self.http_port}/metrics")
        assert status == 200  # /metrics keeps serving through the outage
        return parse_exposition(text)

    async def api(self, selector: str = "queue=email") -> tuple[int, dict[str, object]]:
        url = f"https://127.0.0.1:{self.api_port}{WAITING}"
        status, body = await get(url, params={"labelSelector": selector}, ssl=False)
        return status, json.loads(body)


@pytest.fixture
async def outage_setup(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, ExporterProcess]]:
    server = RedisServer(tmp_path / "redis", aof=True).start()
    queues = tmp_path / "queues.yaml"
    queues.write_text(QUEUES_YAML)
    http_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {
        "REDIS_URL": server.url,
        "ARQSCALE_QUEUES_FILE": str(queues),
        "ARQSCALE_EXPORTER_HOST": "127.0.0.1",
        "ARQSCALE_EXPORTER_PORT": str(http_port),
        "ARQSCALE_METRICS_API_PORT": str(api_port),
        "ARQSCALE_EXPORTER_REFRESH_SECONDS": "0.2",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "exporter.log"
    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "arqscale", "exporter", env=env, stdout=log_file, stderr=log_file
        )
    exporter = ExporterProcess(proc, http_port, api_port, log)

    async def ready() -> bool:
        assert proc.returncode is None, log.read_text()
        try:
            return (await get(f"http://127.0.0.1:{http_port}/readyz"))[0] == 200
        except OSError:
            return False

    try:
        await eventually(ready, 30, "exporter ready")
        yield server, exporter
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.kill()


async def test_redis_killed_and_restarted(outage_setup: tuple[RedisServer, ExporterProcess]) -> None:
    server, exporter = outage_setup
    redis = Redis.from_url(server.url)
    now = round(time.time() * 1000)
    await redis.zadd("arq:queue:email", {f"j{i}": now - 1000 for i in range(3)})
    await redis.aclose()

    async def counts_served() -> bool:
        m = await exporter.metrics()
        return m.get("arqscale_exporter_redis_up") == 1 and m.get('bullmq_queue_waiting{queue="email"}') == 3

    await eventually(counts_served, 5, "counts served before the outage")
    status, body = await exporter.api()
    assert status == 200 and body["items"][0]["value"] == "3"  # type: ignore[index]

    server.kill()  # SIGKILL: the crash case

    async def outage_reported() -> bool:
        return (await exporter.metrics()).get("arqscale_exporter_redis_up") == 0

    await eventually(outage_reported, 10, "redis_up 0 after Redis died")
    metrics = await exporter.metrics()
    # No stale queue numbers while Redis is away; the health says why.
    assert not any(name.startswith("bullmq_queue_waiting") for name in metrics)
    assert metrics["arqscale_exporter_refresh_errors_total"] >= 1
    status, body = await exporter.api()
    assert status == 503, body
    assert (body["kind"], body["reason"]) == ("Status", "ServiceUnavailable")
    assert "queue counts are unavailable" in str(body["message"])
    status, _ = await get(f"http://127.0.0.1:{exporter.http_port}/keda/v1/queues/email")
    assert status == 503
    # Probes stay green: restarting the exporter would not bring Redis back.
    for path in ("/livez", "/readyz"):
        assert (await get(f"http://127.0.0.1:{exporter.http_port}{path}"))[0] == 200
    # Redis stays down for a few refresh intervals, then comes back with its data (AOF).
    await asyncio.sleep(1.5)
    assert exporter.proc.returncode is None
    await asyncio.to_thread(server.start)

    await eventually(counts_served, 10, "counts served again after Redis returned")
    status, body = await exporter.api()
    assert status == 200 and body["items"][0]["value"] == "3"  # type: ignore[index]

    # SIGTERM: a clean exit, as a Deployment rollout expects.
    exporter.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(exporter.proc.wait(), 15) == 0
    log = exporter.log.read_text()
    assert "cannot read queue counts from Redis" in log
    assert "Redis is reachable again" in log
