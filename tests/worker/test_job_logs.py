"""Job logs with real ``arqscale worker`` processes: ``ctx["log"]`` and ``logging`` while a task runs, kept per
job (concurrent jobs in one process never mix), capped, kept and deleted with the job's result, shown by the
API and the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from arqscale.api.app import create_app
from arqscale.core import job_logs
from arqscale.core.dead_letters import DeadLetters
from arqscale.core.keys import in_progress_key, logs_key, result_key
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.spec import QueueSpec, parse_queues
from worker_processes import StartWorker, stop_all, wait_until, worker_starter

FUNCTIONS = ["log_tasks.chatty", "log_tasks.say", "log_tasks.fail_once", "log_tasks.die"]


def queue(**settings: Any) -> dict[str, Any]:
    base = {"functions": FUNCTIONS, "lease_seconds": 2, "poll_interval": 0.1, "job_timeout": 20}
    return {"q": {**base, **settings}}


def spec_of(queues: dict[str, Any]) -> QueueSpec:
    return parse_queues({"queues": queues})["q"]


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


async def run_jobs(redis: Redis, spec: QueueSpec, jobs: list[JobRequest]) -> None:
    producer = Producer(redis, {"q": spec})
    await producer.enqueue_many("q", jobs)

    async def done() -> bool:
        return all([await redis.exists(result_key(j.job_id or "")) for j in jobs])

    await wait_until(done, 30, "every job's result")


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "arqscale", *args]
    return await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True)


async def lines(redis: Redis, job_id: str) -> list[str]:
    page = await job_logs.read(redis, job_id)
    return [line.message for line in page.lines]


async def test_concurrent_jobs_in_one_process_keep_their_own_lines(redis: Redis, workers: StartWorker) -> None:
    queues = queue(concurrency=20)
    worker = await workers(queues).ready()
    jobs = [JobRequest(function="chatty", args=[f"job{i}", 25], job_id=f"c{i}") for i in range(20)]
    await run_jobs(redis, spec_of(queues), jobs)
    for i in range(20):
        tag = f"job{i}"
        got = await lines(redis, f"c{i}")
        assert [x for x in got if " ctx " in x] == [f"{tag} ctx {n}" for n in range(25)]
        assert [x for x in got if " logging " in x] == [f"app.tasks: {tag} logging {n}" for n in range(25)]
        assert got[-1] == f"app.tasks: {tag} from a thread"
        assert len(got) == 51, got  # nothing of another job's, nothing of the worker's own records
    page = await job_logs.read(redis, "c3")
    assert {line.attempt for line in page.lines} == {1}
    assert {line.level for line in page.lines} == {"INFO", "WARNING"}
    assert not page.truncated
    assert "job0 ctx" not in worker.output()  # ctx["log"] lines go to the job, not the worker's stderr


HOSTILE = [
    "\x1b[31mred\x1b[0m \x07 bell \r carriage",
    "nul \x00 inside",
    "lone surrogate \ud800 here",
    "%s %(missing)s % trailing %",
    "<script>alert(1)</script> & <b>",
    "line one\nline two\n",
    "unicode ✓ — 𝄞",
    "",
]


async def test_hostile_text_is_stored_and_shown_as_text(
    redis: Redis, workers: StartWorker, redis_env: dict[str, str], tmp_path: Path
) -> None:
    queues = queue()
    await workers(queues).ready()
    # The producer refuses lone surrogates in arguments (test_text_a_task_cannot_encode_is_escaped has those).
    texts = [t for t in HOSTILE if "\ud800" not in t]
    await run_jobs(redis, spec_of(queues), [JobRequest(function="say", args=texts, job_id="h2")])
    got = await lines(redis, "h2")
    for text in texts:
        assert text in got
        assert f"app.tasks: arg: {text}" in got
    assert "app.tasks: %s %(missing)s % trailing %" in got  # a format string without arguments stays as given
    assert not any("below the queue's level" in x for x in got)
    # The CLI prints control characters escaped, never raw.
    env = {**redis_env, "ARQSCALE_QUEUES_FILE": str(tmp_path / "queues.yaml")}
    out = await cli(env, "logs", "h2")
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\x00" not in out.stdout
    assert "\\x1b[31mred" in out.stdout
    assert "<script>alert(1)</script>" in out.stdout
    as_json = await cli(env, "logs", "h2", "--json")
    assert json.loads(as_json.stdout)["total"] == len(got)
    missing = await cli(env, "logs", "nope")
    assert missing.returncode == 1 and "no job nope" in missing.stdout


async def test_text_a_task_cannot_encode_is_escaped(redis: Redis) -> None:
    limits = spec_of(queue()).logs
    stored = await job_logs.append(
        redis, logs_key("s"), [job_logs.entry(1, 1, "INFO", "lone \ud800 surrogate", limits)], limits
    )
    assert stored == 1
    [line] = (await job_logs.read(redis, "s")).lines
    assert line.message == "lone \\ud800 surrogate"


async def test_caps_cut_the_log_once_with_a_mark(redis: Redis, workers: StartWorker) -> None:
    queues = queue(logs={"max_lines": 10, "max_line_chars": 50})
    await workers(queues).ready()
    await run_jobs(redis, spec_of(queues), [JobRequest(function="chatty", args=["x" * 80, 20], job_id="cap")])
    page = await job_logs.read(redis, "cap")
    assert page.truncated and page.total == 11
    assert page.lines[-1].level == job_logs.TRUNCATED_LEVEL
    assert all(len(line.message) <= 50 + 40 for line in page.lines[:-1])  # clipped, with the clip's note
    by_bytes = queue(logs={"max_bytes": 600})
    limits = spec_of(by_bytes).logs
    entries = [job_logs.entry(1, 1, "INFO", f"line {i} " + "y" * 40, limits) for i in range(30)]
    assert await job_logs.append(redis, logs_key("bytes"), entries, limits) < 30
    assert await job_logs.append(redis, logs_key("bytes"), entries[:1], limits) == 0  # cut once: nothing more is stored
    raw = await redis.lrange(logs_key("bytes"), 0, -2)
    assert sum(len(r) for r in raw) <= 600


async def test_logs_follow_the_result_retention_and_its_deletion(redis: Redis, workers: StartWorker) -> None:
    retention = {"completed_seconds": 60, "failed_seconds": 600, "completed_max": 1}
    queues = queue(max_tries=2, backoff={"strategy": "fixed", "delay": 0.05}, retention=retention)
    spec = spec_of(queues)
    await workers(queues).ready()
    await run_jobs(redis, spec, [JobRequest(function="fail_once", job_id="r")])
    page = await job_logs.read(redis, "r")
    assert [(line.attempt, line.message) for line in page.lines if line.level == "INFO"] == [
        (1, "try 1 starts"),
        (2, "try 2 starts"),
    ]
    error = [line for line in page.lines if line.level == "ERROR"]
    assert "caught, failing the try" in error[0].message and "ValueError: first try fails" in error[0].message
    assert 0 < await redis.pttl(logs_key("r")) <= 60_000
    await run_jobs(redis, spec, [JobRequest(function="die", job_id="d")])
    assert 60_000 < await redis.pttl(logs_key("d")) <= 600_000  # the dead-letter path: failed retention
    # completed_max 1: the next success trims r, and its log goes with its result.
    await run_jobs(redis, spec, [JobRequest(function="say", args=["x"], job_id="s")])
    assert not await redis.exists(result_key("r"), logs_key("r"))
    assert await redis.exists(logs_key("s"))
    # Purging the dead letter deletes its result and its log.
    assert await DeadLetters(redis, spec).purge(["d"]) == 1
    assert not await redis.exists(result_key("d"), logs_key("d"))


async def test_no_log_kept_when_disabled(redis: Redis, workers: StartWorker) -> None:
    queues = queue(logs={"max_lines": 0})
    await workers(queues).ready()
    await run_jobs(redis, spec_of(queues), [JobRequest(function="say", args=["x"], job_id="off")])
    assert not await redis.exists(logs_key("off"))


@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(parse_queues({"queues": queue()}), redis, max_body_bytes=4096)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def test_api_pages_the_log(redis: Redis, workers: StartWorker, api: TestClient[Any, Any]) -> None:
    queues = queue()
    await workers(queues).ready()
    await run_jobs(redis, spec_of(queues), [JobRequest(function="chatty", args=["a/b", 3], job_id="a:b")])
    resp = await api.get("/v1/jobs/a%3Ab/logs", params={"offset": "1", "limit": "2"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["job_id"] == "a:b" and body["total"] == 7 and body["offset"] == 1 and not body["truncated"]
    assert [line["message"] for line in body["lines"]] == ["app.tasks: a/b logging 0", "a/b ctx 1"]
    missing = await api.get("/v1/jobs/none/logs")
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"
    bad = await api.get("/v1/jobs/a%3Ab/logs", params={"limit": "0"})
    assert bad.status == 422


async def test_a_cancelled_waiting_job_keeps_its_log_as_long_as_its_result(redis: Redis, workers: StartWorker) -> None:
    """A job that failed a try and waits for the next keeps its log; cancelled then, the log gets the result's TTL."""
    from arqscale.core.cancellation import CancelOutcome

    queues = queue(max_tries=3, backoff={"strategy": "fixed", "delay": 3600}, retention={"failed_seconds": 120})
    spec = spec_of(queues)
    worker = await workers(queues).ready()
    await Producer(redis, {"q": spec}).enqueue("q", "fail_once", job_id="w")

    async def failed_once() -> bool:
        # The retry is written: the job waits in the queue again, no worker holds it.
        queued = await redis.zscore(spec.queue_key, "w") is not None
        return queued and not await redis.exists(in_progress_key("w")) and "try 1 failed" in worker.output()

    await wait_until(failed_once, 20, "the first try to fail")
    assert await redis.pttl(logs_key("w")) > 86_400_000  # the live job's long TTL
    assert await Producer(redis, {"q": spec}).cancel("w", "q") is CancelOutcome.CANCELLED
    assert 0 < await redis.pttl(logs_key("w")) <= 120_000
    assert await redis.pttl(result_key("w")) > 0


async def test_two_workers_in_one_process_write_each_line_once(redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    import log_tasks

    caplog.set_level("INFO", logger="app.tasks")  # records pass their logger's level before any handler
    from arqscale.worker.loop import Worker

    specs = parse_queues({"queues": {n: {**queue()["q"], "lease_seconds": 2} for n in ("a", "b")}})
    workers = [Worker(specs[n], redis, functions={"chatty": log_tasks.chatty}) for n in ("a", "b")]
    runs = [asyncio.create_task(w.run()) for w in workers]
    try:
        for n in ("a", "b"):
            await Producer(redis, specs).enqueue(n, "chatty", n, 3, job_id=f"two-{n}")

        async def both_done() -> bool:
            return bool(await redis.exists(result_key("two-a")) and await redis.exists(result_key("two-b")))

        await wait_until(both_done, 20, "both jobs")
    finally:
        for w in workers:
            w.request_drain()
        await asyncio.gather(*runs)
    for n in ("a", "b"):
        got = await lines(redis, f"two-{n}")
        assert len(got) == len(set(got)) == 7, got
