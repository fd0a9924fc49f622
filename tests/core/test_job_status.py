"""Job status across queues and states, against a real redis-server."""

from __future__ import annotations

import pickle

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from arqscale.core import keys
from arqscale.core.job_status import PICKLE_NOTE, JobStatusReader, RawJob, resolve
from arqscale.core.models import JobState
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from protocol_steps import bury, fail_with_retry, finish, pick_up

SPECS = parse_queues(
    {
        "queues": {
            "email": {"functions": ["tests.tasks.send_email"], "max_tries": 4},
            "legacy": {"functions": ["tests.tasks.crunch"], "serializer": "pickle"},
        }
    }
)


async def test_unknown_id_is_not_found(redis: Redis) -> None:
    status = await JobStatusReader(redis, SPECS).read("nope")
    assert status.state is JobState.NOT_FOUND
    assert status.queue is None


async def test_queued_then_active_then_complete(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    await producer.enqueue("email", "send_email", "a@example.com", job_id="j1", priority=0)
    reader = JobStatusReader(redis, SPECS)
    queued = await reader.read("j1")
    assert (queued.state, queued.queue, queued.function, queued.priority, queued.attempts) == (
        JobState.QUEUED,
        "email",
        "send_email",
        0,
        0,
    )
    assert queued.enqueued_at is not None and queued.scheduled_for is not None

    await pick_up(redis, SPECS["email"], "j1")
    await redis.set(keys.progress_key("j1"), '{"percent": 40, "message": "rendering", "updated_at": 1.0}')
    active = await reader.read("j1")
    assert active.state is JobState.ACTIVE
    assert active.attempts == 1
    assert active.progress is not None and active.progress.percent == 40

    await finish(redis, SPECS["email"], "j1", success=True, result={"sent": True})
    done = await reader.read("j1")
    assert done.state is JobState.COMPLETED
    assert done.result == {"sent": True}
    assert done.function == "send_email" and done.queue == "email"
    assert done.started_at is not None and done.finished_at is not None and done.finished_at >= done.started_at


async def test_deferred_job_reports_when_it_runs(redis: Redis) -> None:
    await Producer(redis, SPECS).enqueue("email", "send_email", job_id="later", defer_seconds=120)
    status = await JobStatusReader(redis, SPECS).read("later")
    assert status.state is JobState.DEFERRED
    assert status.scheduled_for is not None and status.enqueued_at is not None
    assert 119 < status.scheduled_for - status.enqueued_at < 121


async def test_retry_waiting_shows_last_error_and_attempts(redis: Redis) -> None:
    await Producer(redis, SPECS).enqueue("email", "send_email", job_id="flaky")
    await pick_up(redis, SPECS["email"], "flaky")
    await fail_with_retry(redis, SPECS["email"], "flaky", "TimeoutError: smtp timed out")
    status = await JobStatusReader(redis, SPECS).read("flaky")
    assert status.state is JobState.DEFERRED
    assert status.attempts == 1
    assert status.error == "TimeoutError: smtp timed out"


async def test_failed_result_reports_error(redis: Redis) -> None:
    await Producer(redis, SPECS).enqueue("email", "send_email", job_id="bad")
    await finish(redis, SPECS["email"], "bad", success=False, result="ValueError: no such mailbox")
    status = await JobStatusReader(redis, SPECS).read("bad")
    assert status.state is JobState.FAILED
    assert status.error == "ValueError: no such mailbox"
    assert status.result is None


async def test_dead_wins_over_everything(redis: Redis) -> None:
    await Producer(redis, SPECS).enqueue("email", "send_email", "x", job_id="gone")
    await bury(redis, SPECS["email"], "gone", error="RuntimeError: bounced")
    # Even a stale result key must not hide the dead-letter entry.
    await redis.set(keys.result_key("gone"), b'{"s": true, "r": 1}')
    status = await JobStatusReader(redis, SPECS).read("gone")
    assert status.state is JobState.DEAD
    assert (status.queue, status.function, status.attempts, status.error) == (
        "email",
        "send_email",
        4,
        "RuntimeError: bounced",
    )


async def test_plain_arq_producer_job_on_pickle_queue_is_read_without_unpickling(redis: Redis, redis_url: str) -> None:
    arq = ArqRedis.from_url(redis_url)
    try:
        job = await arq.enqueue_job("crunch", {"n": 1}, _job_id="legacy-1", _queue_name="arq:queue:legacy")
        assert job is not None
    finally:
        await arq.aclose()
    reader = JobStatusReader(redis, SPECS)
    status = await reader.read("legacy-1")
    assert (status.state, status.queue, status.function, status.priority) == (JobState.QUEUED, "legacy", "crunch", 1)
    assert status.note == PICKLE_NOTE
    assert status.enqueued_at is not None

    await finish(redis, SPECS["legacy"], "legacy-1", success=True, result={"secret": 42}, serializer="pickle")
    done = await reader.read("legacy-1")
    assert done.state is JobState.COMPLETED
    assert done.result is None and done.note == PICKLE_NOTE
    assert done.function == "crunch" and done.queue == "legacy"


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


def test_hostile_pickle_result_is_never_executed(capsys: pytest.CaptureFixture[str]) -> None:
    hostile = pickle.dumps({"s": False, "r": _Boom(), "f": "crunch", "q": "arq:queue:legacy", "t": 2})
    raw = RawJob(
        dead={}, scores={}, payload=None, result=hostile, in_progress=False, tries=0, progress=None, error=None
    )
    status = resolve("evil", raw, SPECS, 0)
    assert status.state is JobState.FAILED
    assert status.error is not None and "not shown" in status.error
    assert status.attempts == 2
    assert "unpickled!" not in capsys.readouterr().out


async def test_many_ids_in_one_pipeline(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    await producer.enqueue("email", "send_email", job_id="a")
    await producer.enqueue("email", "send_email", job_id="b", defer_seconds=30)
    states = [s.state for s in await JobStatusReader(redis, SPECS).read_many(["a", "b", "c"])]
    assert states == [JobState.QUEUED, JobState.DEFERRED, JobState.NOT_FOUND]
