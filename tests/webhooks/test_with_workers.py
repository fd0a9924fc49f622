"""End to end: a real worker runs jobs, its scripts write the events, the deliverer turns them into signed
webhooks for the queue's endpoint and the jobs' callback URLs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arqscale.core.producer import Producer
from webhook_support import SECRET_ENV, Receiver, delivering, hooks_queue, receiving, specs_of, until
from worker_processes import StartWorker, stop_all, worker_starter


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)


async def test_worker_events_become_webhooks(redis: Redis, workers: StartWorker) -> None:
    receiver = Receiver()
    queues = hooks_queue(receiver, functions=["log_tasks.say", "log_tasks.die"], max_tries=1, poll_interval=0.1)
    queues["q"]["webhooks"]["endpoints"]["main"]["events"] = ["active", "completed", "dead"]
    specs = specs_of(queues)
    producer = Producer(redis, specs)
    async with receiving(receiver), delivering(redis, specs):
        await workers(queues).ready()
        for i in range(10):
            callback = receiver.url(f"cb-{i}") if i % 2 == 0 else None
            await producer.enqueue("q", "say", f"hello {i}", job_id=f"ok-{i}", callback_url=callback)
        await producer.enqueue("q", "die", job_id="bad", callback_url=receiver.url("cb-bad"))
        # main: active + final for 11 jobs; callbacks: the final event of 5 + 1 jobs.
        await until(lambda: len(receiver.ids()) == 11 * 2 + 6, "every webhook", within=60)
    assert not receiver.rejected
    main = [r.body for r in receiver.received if r.path == "main"]
    finals = {b["data"]["job_id"]: b for b in main if b["type"] != "job.active"}
    assert set(finals) == {f"ok-{i}" for i in range(10)} | {"bad"}
    assert finals["ok-3"]["type"] == "job.completed"
    assert finals["ok-3"]["data"]["try"] == 1 and "duration_ms" in finals["ok-3"]["data"]
    assert finals["ok-3"]["data"]["worker"]  # the worker id that ran it
    assert finals["bad"]["type"] == "job.dead" and "RuntimeError: no" in finals["bad"]["data"]["error"]
    callbacks = {r.path: r.body for r in receiver.received if r.path.startswith("cb-")}
    assert set(callbacks) == {f"cb-{i}" for i in range(0, 10, 2)} | {"cb-bad"}
    assert callbacks["cb-4"]["data"]["job_id"] == "ok-4" and callbacks["cb-4"]["type"] == "job.completed"
    assert all(r.id.endswith(":callback") for r in receiver.received if r.path.startswith("cb-"))
