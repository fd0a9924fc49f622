"""BullMQ queues (``backend: bullmq``): our counts against a real BullMQ's ``getJobCounts``.

The jobs are made by BullMQ itself, twice: by the Node package the services run (npm ``bullmq`` 6,
tests/bullmq_world.mjs, installed into bench/ by ``npm install`` when missing) and by the PyPI port
(tests/bullmq_world.py). A worker completes some, fails some and holds one running; others are
delayed, prioritized, waiting for children, or sit in a paused queue. The two differ where BullMQ
changed: BullMQ 6 leaves a paused queue's jobs in ``wait`` (and counts them as waiting), the port
moves them to ``paused``; our raw counts follow whichever wrote the keys, and our folded counts call
them paused in both cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arqscale.core.counts import CountsReader
from arqscale.core.spec import QueueSpec
from exporter_support import get, parse_exposition, running_exporter

TESTS = Path(__file__).resolve().parent.parent  # the shared helpers (worker_tasks, ...) live in tests/
BENCH = TESTS.parent / "bench"
BULLMQ_TYPES = ["waiting", "paused", "active", "delayed", "prioritized", "completed", "failed", "waiting-children"]
SPECS = {
    "node": QueueSpec(name="node", backend="bullmq"),
    "node-held": QueueSpec(name="node-held", backend="bullmq"),
    "custom": QueueSpec(name="custom", backend="bullmq", prefix="myapp"),
}


def world_command(kind: str, redis_url: str) -> list[str]:
    if kind == "python-port":
        return [sys.executable, str(TESTS / "bullmq_world.py"), redis_url]
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is missing: the BullMQ comparison needs Node 20 (apt-get install -y nodejs)")
    if not (BENCH / "node_modules" / "bullmq").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is missing (apt-get install -y npm)"
        subprocess.run([npm, "install", "--prefix", str(BENCH), "--no-audit", "--no-fund"], check=True, timeout=600)
    return [node, str(TESTS / "bullmq_world.mjs"), redis_url]


@pytest.fixture(params=["node", "python-port"])
def bullmq_world(request: pytest.FixtureRequest, redis: Redis, redis_url: str) -> Iterator[dict[str, dict[str, int]]]:
    """Jobs in every BullMQ state, made by BullMQ in a helper process; yields its getJobCounts per queue.

    Depends on ``redis`` for its flush: leftovers of an earlier test would be picked up by the worker.
    """
    command = world_command(request.param, redis_url)
    env = {**os.environ, "BULLMQ_FROM": str(BENCH)}
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert line, f"{command[1]} exited with {proc.wait(10)}"
        yield json.loads(line)
    finally:
        with contextlib.suppress(BrokenPipeError):  # the helper may already have died; its exit code says why
            proc.stdin.write("done\n")
            proc.stdin.close()
        proc.stdout.close()
        code = proc.wait(30)
    assert code == 0


async def test_counts_equal_bullmq_get_job_counts(redis: Redis, bullmq_world: dict[str, dict[str, int]]) -> None:
    _, raw = await CountsReader(redis).read_detailed(SPECS, round(time.time() * 1000))
    for name, theirs in bullmq_world.items():
        assert dict(raw[name].states) == {t: theirs[t] for t in BULLMQ_TYPES}, name
    # Every state is really exercised on "node", so the comparison above is not vacuous.
    node = raw["node"].states
    assert node == {
        "waiting": 4,
        "paused": 0,
        "active": 1,
        "delayed": 2,
        "prioritized": 3,
        "completed": 3,
        "failed": 2,
        "waiting-children": 1,
    }
    held = raw["node-held"]
    assert held.is_paused and held.states["waiting"] + held.states["paused"] == 2
    assert raw["custom"].states["waiting"] == 1


async def test_bullmq_counts_fold_into_queue_counts(redis: Redis, bullmq_world: dict[str, dict[str, int]]) -> None:
    counts, _ = await CountsReader(redis).read_detailed(SPECS, round(time.time() * 1000))
    node = counts["node"]
    # Prioritized jobs are ready to run: they are part of waiting (and so of the backlog).
    assert (node.waiting, node.prioritized, node.active, node.backlog) == (7, 3, 1, 8)
    assert (node.delayed, node.completed, node.failed, node.waiting_children) == (2, 3, 2, 1)
    assert 0 <= node.oldest_waiting_seconds < 30
    held = counts["node-held"]
    assert (held.waiting, held.paused, held.is_paused) == (0, 2, True)


async def test_exporter_serves_bullmq_queues(redis_url: str, bullmq_world: dict[str, dict[str, int]]) -> None:
    async with running_exporter(redis_url, SPECS) as exp:
        _, text = await get(f"http://127.0.0.1:{exp.http_port}/metrics")
        samples = parse_exposition(text)
        assert samples['bullmq_queue_waiting{queue="node"}'] == 7
        assert samples['bullmq_queue_failed{queue="node"}'] == 2
        assert samples['bullmq_job_count{queue="node",state="waiting-children"}'] == 1
        assert samples['bullmq_queue_paused{queue="node-held"}'] == 2
        status, body = await get(f"http://127.0.0.1:{exp.http_port}/keda/v1/queues/node")
        assert status == 200
        data = json.loads(body)
        assert (data["backend"], data["backlog"], data["prioritized"]) == ("bullmq", 8, 3)
        assert data["bullmq"] == {t: bullmq_world["node"][t] for t in BULLMQ_TYPES}


async def test_marker_at_the_tail_of_wait(redis: Redis) -> None:
    spec = QueueSpec(name="old", backend="bullmq")
    now = round(time.time() * 1000)
    await redis.lpush("bull:old:wait", "0:123")  # the marker, pushed first so it sits at the tail
    await redis.lpush("bull:old:wait", "7")
    await redis.hset("bull:old:7", mapping={"timestamp": now - 5000, "delay": 0})
    counts, raw = await CountsReader(redis).read_detailed({"old": spec}, now)
    assert raw["old"].states["waiting"] == 1
    assert counts["old"].oldest_waiting_seconds == pytest.approx(5.0)
    assert await redis.llen("bull:old:wait") == 2  # counting never writes, unlike BullMQ's own script
