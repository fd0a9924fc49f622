"""A Sentinel failover under load, with real processes on loopback (issue 13).

A primary, a replica and three sentinels (``tests/sentinel_servers.py``); real ``arqscale worker``,
``arqscale api`` and ``arqscale exporter`` processes pointed at the sentinels; jobs enqueued through the
API before, during and after the primary is SIGKILLed. Every process follows the new primary without a
restart.

What asynchronous replication can lose, and how this test accounts for it: the primary acknowledges a
write before its replica has it. A job whose enqueue (or outcome) the old primary acknowledged in the
last moments before the kill, but had not yet sent to the replica, is not on the new primary: the job
(or its completion) is gone. The test does not hide this: it asks the old primary's replication
offset question directly — every job the API acknowledged is either found on the new primary in an
end state, or reported as lost, and losses are allowed only for jobs acknowledged after the last
moment the replica was known to be in sync (the ``WAIT 1`` the test sends just before the kill). A
job acknowledged before that point must never be lost. Durable enqueue (``REDIS_WAIT_REPLICAS=1``)
closes the window for enqueues: the API answers 2xx only once the replica has the job, and the
``durable`` run allows no loss at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from redis.asyncio import Redis

from api_processes import api_process
from exporter_support import get, parse_exposition
from redis_server import free_port
from sentinel_servers import SentinelSetup
from worker_processes import WorkerProcess, stack_env, stop_all

QUEUES = {"q": {"functions": ["worker_tasks.add"], "concurrency": 8, "max_tries": 5}}
END_STATES = {"completed", "dead"}


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path / "sentinel", password="data-secret-1", sentinel_password="sentinel-secret-2")
    setup.start()
    try:
        yield setup
    finally:
        setup.stop()


def process_env(setup: SentinelSetup, tmp_path: Path, **extra: str) -> dict[str, str]:
    return stack_env(setup.env(), QUEUES, tmp_path, **extra)


def direct(setup: SentinelSetup, port: int) -> Redis:
    return Redis(port=port, password=setup.password, socket_timeout=5, decode_responses=True)


async def job_state(api: str, http: aiohttp.ClientSession, job_id: str) -> tuple[int, Any]:
    async with http.get(f"{api}/v1/jobs/{job_id}") as response:
        return response.status, await response.json()


@dataclass
class Load:
    """Enqueues through the API every 10 ms and records what it answered."""

    api: str
    http: aiohttp.ClientSession
    acknowledged: dict[str, float] = field(default_factory=dict)  # job id -> when the API answered 2xx
    statuses: dict[int, int] = field(default_factory=dict)
    codes: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            job_id = f"job-{n}"
            body = {"function": "add", "args": [n, 1], "job_id": job_id}
            try:
                async with self.http.post(f"{self.api}/v1/queues/q/jobs", json=body) as response:
                    self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                    payload = await response.json()
                    if response.status < 300:
                        self.acknowledged[job_id] = time.monotonic()
                    else:
                        self.codes.add(payload.get("error", "?"))
            except (aiohttp.ClientError, TimeoutError):
                self.statuses[0] = self.statuses.get(0, 0) + 1
            await asyncio.sleep(0.01)

    async def until(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.acknowledged)} of {count} jobs: {self.statuses} {self.codes}"
            )
            await asyncio.sleep(0.1)


@dataclass
class Exporter:
    proc: asyncio.subprocess.Process
    port: int
    metrics_api_port: int
    log: Path

    async def metrics(self) -> dict[str, float]:
        status, text = await get(f"http://127.0.0.1:{self.port}/metrics")
        assert status == 200  # /metrics keeps serving through the switch
        return parse_exposition(text)

    async def external_status(self) -> int:
        url = (
            f"https://127.0.0.1:{self.metrics_api_port}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/"
            "bullmq_queue_waiting"
        )
        return (await get(url, params={"labelSelector": "queue=q"}, ssl=False))[0]

    async def until_up(self, within: float) -> None:
        deadline = time.monotonic() + within
        while (await self.metrics()).get("arqscale_exporter_redis_up") != 1:
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            await asyncio.sleep(0.1)


async def start_exporter(env: dict[str, str], log: Path) -> Exporter:
    port, metrics_api_port = free_port(), free_port()
    env = env | {
        "ARQSCALE_EXPORTER_HOST": "127.0.0.1",
        "ARQSCALE_EXPORTER_PORT": str(port),
        "ARQSCALE_METRICS_API_PORT": str(metrics_api_port),
        "ARQSCALE_EXPORTER_REFRESH_SECONDS": "0.2",
    }
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "arqscale", "exporter", env=env, stdout=out, stderr=out
        )
    return Exporter(proc, port, metrics_api_port, log)


async def gap_and_promotion(setup: SentinelSetup, exporter: Exporter, old_port: int, within: float) -> int:
    """While the sentinels promote the replica: the exporter reports the gap (redis_up 0 with no
    per-queue series on /metrics, 503 on the External Metrics API; each seen in its own answer, as the
    exporter may recover between two requests). Returns the new primary's port."""
    started = time.monotonic()
    metrics_gap = api_gap = False
    new_port = None
    while new_port is None or not (metrics_gap and api_gap):
        assert time.monotonic() - started < within, f"gap: /metrics {metrics_gap}, API {api_gap}; new: {new_port}"
        metrics = await exporter.metrics()
        if metrics.get("arqscale_exporter_redis_up") == 0:
            assert not any(k.startswith("bullmq_queue_waiting") for k in metrics), metrics
            metrics_gap = True
        status = await exporter.external_status()
        assert status in (200, 503), status
        api_gap = api_gap or status == 503
        if new_port is None:
            with contextlib.suppress(redis.RedisError, OSError):  # a sentinel busy with the failover
                port = await asyncio.to_thread(setup.master_port)
                new_port = port if port != old_port else None
        await asyncio.sleep(0.05)
    return new_port


async def settle(load: Load, within: float) -> list[str]:
    """Wait until every acknowledged job has ended (completed, or dead after its tries); return the ones
    the new primary does not know: lost to asynchronous replication."""
    lost: list[str] = []
    pending = dict(load.acknowledged)
    deadline = time.monotonic() + within
    while pending:
        for job_id in list(pending):
            status, body = await job_state(load.api, load.http, job_id)
            if status == 200 and body.get("state") in END_STATES:
                del pending[job_id]
            elif status == 404:
                lost.append(job_id)
                del pending[job_id]
        if pending:
            assert time.monotonic() < deadline, f"jobs never ended: {sorted(pending)[:10]}"
            await asyncio.sleep(0.2)
    return lost


@pytest.mark.parametrize("durable", [False, True], ids=["async", "durable"])
async def test_failover_under_load(sentinel_setup: SentinelSetup, tmp_path: Path, durable: bool) -> None:
    """``durable``: the API enqueues with ``REDIS_WAIT_REPLICAS=1``. After the failover the new primary
    has no replica until the old one comes back (restarted here; the sentinels make it a replica), and
    until then the API answers 503 ``not_replicated``; no acknowledged job may be lost."""
    setup = sentinel_setup
    env = process_env(setup, tmp_path)
    api_env = env | ({"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "500"} if durable else {})
    workers = [WorkerProcess(env, "q", tmp_path / f"worker-{i}.log") for i in range(2)]
    exporter = await start_exporter(env, tmp_path / "exporter.log")
    try:
        for w in workers:
            await w.ready(30)
        with api_process(api_env, tmp_path / "api.log") as api:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                load = Load(api, http)
                producer = asyncio.create_task(load.run())
                try:
                    # Before: jobs flow, the exporter reads counts.
                    await load.until(50, 30)
                    await exporter.until_up(30)
                    old_port = setup.primary.port
                    # The last point the replica is known to hold everything: later acknowledgements may be lost.
                    async with direct(setup, old_port) as primary:
                        assert await primary.execute_command("WAIT", 1, 5000) == 1
                    in_sync_at = time.monotonic()
                    setup.kill_primary()
                    killed_at = time.monotonic()
                    # During: the exporter reports the gap, the API answers 503 (never 500).
                    new_port = await gap_and_promotion(setup, exporter, old_port, 60)
                    assert new_port == setup.replica.port
                    if durable:  # a replica for the new primary: the old one, back as an empty server
                        await asyncio.to_thread(setup.wait_until_promoted_everywhere, new_port, 30)
                        await asyncio.to_thread(setup.primary.start)
                    # After: writes succeed again through the API, without restarting anything of ours.
                    await load.until(len(load.acknowledged) + 50, 90)
                    recovered_at = max(load.acknowledged.values())
                finally:
                    load.stop.set()
                    await producer
                assert 500 not in load.statuses, (load.statuses, (tmp_path / "api.log").read_text()[-3000:])
                assert load.statuses.get(503), load.statuses  # the switch shows as 503 (retry later), never 500
                assert load.codes <= {"redis_unavailable", "redis_error", *(["not_replicated"] if durable else [])}
                # The exporter is back, with counts, and its External Metrics API answers.
                await exporter.until_up(30)
                assert await exporter.external_status() == 200
                # Every acknowledged job ends on the new primary, or was lost to asynchronous replication:
                # acknowledged after the last in-sync point and before the kill. Durable: none lost.
                lost = await settle(load, 120)
                window = [] if durable else [j for j in lost if in_sync_at <= load.acknowledged[j] <= killed_at]
                assert sorted(lost) == sorted(window), lost
        for w in workers:
            assert w.proc.poll() is None, w.output()[-3000:]  # followed the new primary, no restart
        assert exporter.proc.returncode is None
        print(
            f"\nfailover ({'durable' if durable else 'async'}): {len(load.acknowledged)} jobs acknowledged, "
            f"{len(lost)} lost to async replication, API statuses {load.statuses} {sorted(load.codes)}, "
            f"writes back {recovered_at - killed_at:.2f}s after the kill"
        )
        logs = "".join(w.output() for w in workers) + (tmp_path / "api.log").read_text() + exporter.log.read_text()
        for secret in (setup.password, setup.sentinel_password):
            assert secret is not None and secret not in logs
    finally:
        if exporter.proc.returncode is None:
            exporter.proc.kill()
            await exporter.proc.wait()
        stop_all(workers)
