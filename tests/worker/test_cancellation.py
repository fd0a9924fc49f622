"""Cancellation against a real redis-server and real worker processes: waiting, delayed and running jobs,
plain arq's ``Job.abort()``, the API and the CLI, and every race (completion, retry, put-back) settled in
Redis with exactly one final state."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from arq.jobs import Job
from redis.asyncio import Redis

from arqscale.api.app import create_app
from arqscale.core import cancellation, serializers
from arqscale.core.cancellation import ABORT_KEY, CancelOutcome
from arqscale.core.counts import CountsReader
from arqscale.core.job_status import JobStatusReader
from arqscale.core.keys import QueueKeys
from arqscale.core.models import JobState
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from arqscale.worker import outcomes
from arqscale.worker.pickup import QueueOps
from worker_processes import StartWorker, runs, stop_all, wait_until, worker_starter

FUNCTIONS = ["worker_tasks.sleep", "worker_tasks.record", "worker_tasks.clean_up_on_cancel", "worker_tasks.add"]
QUEUES = {
    "q": {"functions": FUNCTIONS, "lease_seconds": 1, "poll_interval": 0.1, "concurrency": 2},
    "legacy": {"functions": FUNCTIONS, "lease_seconds": 1, "poll_interval": 0.1, "serializer": "pickle"},
}
SPECS = parse_queues({"queues": QUEUES})
SPEC = SPECS["q"]


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


async def state(redis: Redis, job_id: str) -> JobState:
    return (await JobStatusReader(redis, SPECS).read(job_id)).state


async def _state_is(redis: Redis, job_id: str, expected: JobState) -> bool:
    return await state(redis, job_id) is expected


# ----------------------------------------------------------------------------- waiting and delayed


async def test_a_waiting_or_delayed_job_never_runs(redis: Redis, workers: StartWorker) -> None:
    producer = Producer(redis, SPECS)
    await producer.enqueue("q", "record", job_id="waiting")
    await producer.enqueue("q", "record", job_id="delayed", defer_seconds=1)
    assert await producer.cancel("waiting") is CancelOutcome.CANCELLED
    assert await producer.cancel("delayed", "q") is CancelOutcome.CANCELLED
    assert await producer.cancel("waiting") is CancelOutcome.FINISHED  # cancelled is final
    assert await producer.cancel("nobody") is CancelOutcome.NOT_FOUND
    await producer.enqueue("q", "record", job_id="after")
    await workers(QUEUES).ready()
    await wait_until(lambda: redis.exists("runs:after"), 10, "the next job ran")
    await asyncio.sleep(1.2)  # the delayed one's time has come and gone
    assert await runs(redis, "waiting") == [] and await runs(redis, "delayed") == []
    status = await JobStatusReader(redis, SPECS).read("delayed")
    assert status.state is JobState.CANCELLED and status.error == "cancelled on request"
    counts = (await CountsReader(redis).read(SPECS))["q"]
    assert (counts.waiting, counts.delayed, counts.active) == (0, 0, 0)


# ----------------------------------------------------------------------------- running


async def test_a_running_job_is_stopped_within_a_second_not_retried_and_frees_its_slot(
    redis: Redis, workers: StartWorker
) -> None:
    worker = await workers({"q": {**QUEUES["q"], "concurrency": 1}}).ready()
    producer = Producer(redis, SPECS)
    await producer.enqueue("q", "clean_up_on_cancel", 60, job_id="long")
    await producer.enqueue("q", "record", job_id="next")
    await wait_until(lambda: redis.exists("runs:long"), 10, "started")
    assert await producer.cancel("long") is CancelOutcome.CANCELLING
    await wait_until(lambda: _state_is(redis, "long", JobState.CANCELLED), 3, "cancelled")
    assert await redis.lrange("cleaned:long", 0, -1) == [b"1"]  # the task caught it to clean up
    await wait_until(lambda: redis.exists("runs:next"), 5, "its slot ran the next job")
    await asyncio.sleep(1.5)  # past a lease: nothing retries it
    assert [r["try"] for r in await runs(redis, "long")] == [1]
    assert await redis.zscore(ABORT_KEY, "long") is None
    k = QueueKeys.for_queue("q", SPEC.queue_key)
    assert await redis.zscore(k.queue, "long") is None and await redis.hlen(k.dlq) == 0
    assert worker.proc.poll() is None


async def test_plain_arqs_abort_returns_true_for_running_and_waiting_jobs(
    redis: Redis, redis_url: str, workers: StartWorker
) -> None:
    legacy = SPECS["legacy"]
    arq = ArqRedis.from_url(redis_url)  # arq's default: pickle
    try:
        running = await arq.enqueue_job("sleep", 60, _job_id="arq-running", _queue_name=legacy.queue_key)
        assert running is not None
        await workers(QUEUES, "legacy").ready()
        await wait_until(lambda: redis.exists("runs:arq-running"), 10, "started")
        assert await running.abort(timeout=5, poll_delay=0.1) is True
        assert await state(redis, "arq-running") is JobState.CANCELLED
        waiting = await arq.enqueue_job("record", _job_id="arq-waiting", _queue_name=legacy.queue_key, _defer_by=600)
        assert waiting is not None
        assert await waiting.abort(timeout=5, poll_delay=0.1) is True  # arq moved it to now; we cancelled it
        assert await runs(redis, "arq-waiting") == []
    finally:
        await arq.aclose()


async def test_a_json_queue_gives_plain_arq_clients_the_cancelled_error(redis: Redis, redis_url: str) -> None:
    await Producer(redis, SPECS).enqueue("q", "record", job_id="j")
    assert await Producer(redis, SPECS).cancel("j") is CancelOutcome.CANCELLED
    arq = ArqRedis.from_url(redis_url)
    try:
        job = Job("j", arq, _queue_name=SPEC.queue_key, _deserializer=serializers.json_loads)
        with pytest.raises(asyncio.CancelledError):
            await job.result(timeout=2)
    finally:
        await arq.aclose()


# ----------------------------------------------------------------------------- races, settled in Redis


async def _picked(redis: Redis, job_id: str) -> Any:
    await Producer(redis, SPECS).enqueue("q", "record", job_id=job_id)
    [job] = (await QueueOps(redis, SPEC, "w").pickup(1, f"w.{job_id}")).jobs
    assert job.job_id == job_id
    return job


async def test_a_cancel_that_meets_a_completion_leaves_it_completed(redis: Redis) -> None:
    job = await _picked(redis, "race-ok")
    assert await Producer(redis, SPECS).cancel("race-ok") is CancelOutcome.CANCELLING
    ok = outcomes.Finish("ok", job.job_id, serializers.json_dumps(_result(job.job_id)), token=job.token)
    assert await QueueOps(redis, SPEC, "w").finish([ok]) == []
    assert await state(redis, "race-ok") is JobState.COMPLETED
    assert await redis.zscore(ABORT_KEY, "race-ok") is None
    assert await Producer(redis, SPECS).cancel("race-ok") is CancelOutcome.FINISHED


@pytest.mark.parametrize("outcome", ["retry", "back"])
async def test_a_cancel_that_meets_a_retry_or_a_put_back_wins_at_the_next_pickup(redis: Redis, outcome: str) -> None:
    job = await _picked(redis, f"race-{outcome}")
    assert await Producer(redis, SPECS).cancel(job.job_id) is CancelOutcome.CANCELLING
    ops = QueueOps(redis, SPEC, "w")
    record = outcomes.retry(SPEC, job, 1, "boom", None, 0, defer_ms=0)[0] if outcome == "retry" else outcomes.back(job)
    assert await ops.finish([record]) == []
    [again] = (await ops.pickup(1, "w.next")).jobs
    assert again.job_id == job.job_id and again.aborted  # taken only to be cancelled
    assert await ops.finish([outcomes.cancelled(SPEC, again, "cancelled before it ran", 0)]) == []
    assert await state(redis, job.job_id) is JobState.CANCELLED
    counts = (await CountsReader(redis).read(SPECS))["q"]
    assert (counts.waiting, counts.active, counts.failed) == (0, 0, 0)
    assert await redis.zscore(ABORT_KEY, job.job_id) is None


def _result(job_id: str) -> dict[str, Any]:
    return {"t": 1, "f": "record", "a": [], "k": {}, "et": 0, "s": True, "r": "ok", "st": 0, "ft": 0,
            "q": SPEC.queue_key, "id": job_id}  # fmt: skip


async def test_cancelled_results_name_the_job_and_read_back_without_unpickling(redis: Redis) -> None:
    payload = b"\x80\x05not really a pickle"
    raw = cancellation.cancelled_result(SPECS["legacy"], "x", payload, 2, "cancelled on request", 5)
    assert raw.startswith(b"\x80")  # pickle queue: arq's CancelledError, built here, never read back by us
    data = serializers.json_loads(cancellation.cancelled_result(SPEC, "x", None, 0, "why", 5))
    assert isinstance(data["r"], asyncio.CancelledError) and data["x"] == "cancelled"


# ----------------------------------------------------------------------------- API and CLI


async def test_the_api_cancels_and_says_when_it_cannot(redis: Redis) -> None:
    await _picked(redis, "api-running")
    producer = Producer(redis, SPECS)
    await producer.enqueue("q", "record", job_id="api-1")
    await producer.enqueue("q", "record", job_id="api-2")
    async with TestClient(TestServer(create_app(SPECS, redis, max_body_bytes=65536))) as client:
        r = await client.post("/v1/jobs/api-1/cancel")
        assert r.status == 202 and await r.json() == {"queue": "q", "job_id": "api-1", "status": "cancelled"}
        r = await client.post("/v1/jobs/api-running/cancel")
        assert r.status == 202 and (await r.json())["status"] == "cancelling"
        r = await client.post("/v1/jobs/api-1/cancel")
        assert r.status == 409 and "already finished" in (await r.json())["message"]
        r = await client.post("/v1/jobs/nobody/cancel")
        assert r.status == 404
        r = await client.get("/v1/jobs/api-1")
        assert (await r.json())["state"] == "cancelled"
        doc = await (await client.get("/openapi.json")).json()
        assert "/v1/jobs/{job_id}/cancel" in doc["paths"]
    assert await state(redis, "api-2") is JobState.QUEUED


def test_the_cli_cancels(redis_env: dict[str, str], tmp_path: Path) -> None:
    qfile = tmp_path / "queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": QUEUES}))
    env = {**redis_env, "ARQSCALE_QUEUES_FILE": str(qfile)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "arqscale", *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    assert cli("enqueue", "q", "record", "--job-id", "cli-1").returncode == 0
    done = cli("cancel", "cli-1")
    assert done.returncode == 0 and done.stdout.strip() == "job cli-1 cancelled: it will not run"
    again = cli("cancel", "cli-1")
    assert again.returncode == 1 and "already finished" in again.stdout
    assert cli("cancel", "nobody").returncode == 1
    status = cli("status", "cli-1", "--json")
    assert '"cancelled"' in status.stdout
