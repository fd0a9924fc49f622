"""What a worker process has imported when its first job runs: only what that job needs (issue 16, cold start).

A scale-up waits for a new worker's first job (bench/cold_start.py), and most of that wait is imports. Each
module named here was once imported before the first job and moved after it (or out of the worker); this test
fails when one comes back. The job's task records ``sys.modules`` as it runs (tests/cold_start_tasks.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from worker_processes import StartWorker, stop_all, wait_until, worker_starter

QUEUES = {"q": {"functions": ["cold_start_tasks.imported"]}}

# Not before the first job: loaded later by the worker (metrics, schedules), or by other commands only.
LATER = (
    "prometheus_client",  # worker/metrics.py: loaded once the first jobs are done, or on the first scrape
    "http.server",  # prometheus_client's exposition brings these
    "urllib.request",
    "wsgiref",
    "arqscale.core.schedules",  # the scheduler's first look waits for the first jobs
    "arqscale.core.producer",
    "arqscale.core.event_stream",
    "arqscale.api",
    "arqscale.exporter",
    "arqscale.webhooks",
    "aiohttp",  # the probes are served without it (worker/probes.py)
    "kubernetes",  # only in a pod, for the deletion cost
    "opentelemetry",  # only with OTEL_* set
)
# Stand-ins only (core/lazy_imports.py): the package may be in sys.modules, none of its modules may.
STAND_INS = ("jwt", "cryptography")


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


def loaded(modules: list[str], name: str) -> list[str]:
    return [m for m in modules if m == name or m.startswith(name + ".")]


async def test_the_first_job_runs_before_the_heavy_imports(redis: Redis, workers: StartWorker) -> None:
    # Queued before the worker starts, as in a scale-up: its first pickup takes it.
    await Producer(redis, parse_queues({"queues": QUEUES})).enqueue("q", "imported", job_id="first")
    w = workers(QUEUES)
    raw = await wait_until(lambda: redis.get("imported:first"), 30, "the first job")
    modules: list[str] = json.loads(raw)
    assert "arqscale.worker.loop" in modules  # the list is the worker's own
    early = {name: found for name in LATER if (found := loaded(modules, name))}
    assert not early, f"imported before the first job: {early}"
    stand_ins = {name: found for name in STAND_INS if (found := loaded(modules, name + "."))}
    assert not stand_ins, f"imported before the first job: {stand_ins}"
    # Later they come: the metrics are loaded once the first jobs are done.
    assert await w.probe("/metrics") == 200
