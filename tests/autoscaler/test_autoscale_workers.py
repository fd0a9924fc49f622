"""The local autoscaler against real worker processes, a real exporter and its HTTPS metrics API.

A burst scales the pool up to its maximum, the queue drains, and the pool scales back to its minimum
through SIGTERM drains, with every job run exactly once: no job is cut short by a scale-down (each
start is recorded in ``runs:<id>``, each finish in ``finished``). The chart's behavior is kept in form
(scale up by 100 % or 4 per period, no window; scale down by 50 % per period after a window) with its
times shortened, and a 0.5 s sync period instead of 15 s, so the run takes seconds, not minutes.
Every wait is bounded generously (the suite's style); nothing asserts how fast it went.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from redis.asyncio import Redis

from arqscale.autoscaler import hpa as hpa_mod
from arqscale.autoscaler.metrics_client import MetricsApi, MetricsClient
from arqscale.autoscaler.pool import WorkerPool
from arqscale.autoscaler.runner import Autoscaler, Change
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from exporter_support import running_exporter
from worker_processes import TESTS, runs

QUEUES = {
    "burst": {
        "functions": ["worker_tasks.sleep"],
        "concurrency": 2,
        "job_timeout": 30,
        "autoscaling": {"min_replicas": 1, "max_replicas": 4, "metrics": ["backlog"], "target_per_replica": 4},
    }
}
FAST_BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 2},
            {"type": "Pods", "value": 4, "periodSeconds": 2},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 3,
        "selectPolicy": "Min",
        "policies": [{"type": "Percent", "value": 50, "periodSeconds": 2}],
    },
}
JOBS = 60
BOUND = 180.0  # seconds for the whole cycle on a busy 2-core machine; it takes far less


async def test_burst_scales_up_to_max_drains_and_scales_down_to_min(
    redis: Redis, redis_url: str, redis_env: dict[str, str], tmp_path: Path
) -> None:
    specs = parse_queues({"queues": QUEUES})
    qfile = tmp_path / "queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": QUEUES}))
    env = redis_env | {"ARQSCALE_QUEUES_FILE": str(qfile)}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    hpa = hpa_mod.from_spec(specs["burst"], FAST_BEHAVIOR)
    pool = WorkerPool("burst", env=env, log_dir=tmp_path / "logs")
    changes: list[Change] = []
    problems: list[str] = []
    async with running_exporter(redis_url, specs) as exporter:
        api = MetricsApi(f"https://127.0.0.1:{exporter.api_port}", insecure=True)
        async with MetricsClient(api) as client:
            scaler = Autoscaler(
                hpa, pool, client, sync_period=0.5, on_change=changes.append, on_problem=problems.append
            )
            stop = asyncio.Event()
            task = asyncio.create_task(scaler.run(stop))
            try:
                await _until(lambda: _ready(pool, 1), "the minimum's first worker")
                producer = Producer(redis, specs)
                ids = [(await producer.enqueue("burst", "sleep", 0.3, job_id=f"j{i}")).job_id for i in range(JOBS)]
                await _until(lambda: _finished(redis, JOBS), "every job to finish")
                await _until(lambda: _settled_at(scaler, pool, 1), "scale-down to the minimum")
            finally:
                stop.set()
                await task
                killed = await pool.stop_all(40)
    assert killed == [], "a worker did not stop within its drain timeout"
    peak = max(c.after for c in changes)
    assert peak == hpa.max_replicas, changes
    assert changes[-1].after == hpa.min_replicas, changes
    assert pool.unexpected_exits == 0
    # Exactly once: one start per job, on its first try, and one finish each.
    for job_id in ids:
        assert [r["try"] for r in await runs(redis, job_id)] == [1], job_id
    finished = Counter(x.decode() for x in await redis.lrange("finished", 0, -1))
    assert finished == Counter(ids)
    # The drained workers exited cleanly: SIGTERM is a drain, not a kill.
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "Traceback" not in logs


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + BOUND
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _ready(pool: WorkerPool, n: int) -> bool:
    await pool.probe()
    return pool.ready_count() >= n


async def _finished(redis: Redis, n: int) -> bool:
    return int(await redis.llen("finished")) >= n


async def _settled_at(scaler: Autoscaler, pool: WorkerPool, n: int) -> bool:
    return scaler.spec_replicas == n and len(pool.serving()) == n and not pool.draining()
