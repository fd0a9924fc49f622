"""Pages of jobs by state (``arqscale.core.job_listing``) against a real redis-server."""

from __future__ import annotations

import json
import pickle
import random

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from arqscale.core import keys, scores
from arqscale.core.counts import CountsReader
from arqscale.core.job_listing import LIST_SCRIPT, JobLister, ListState, script_args
from arqscale.core.job_status import PICKLE_NOTE
from arqscale.core.lua import run_scripts
from arqscale.core.models import Progress
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from protocol_steps import bury, fail_with_retry, finish, now_ms, pick_up, qkeys

SPECS = parse_queues(
    {
        "queues": {
            "email": {"functions": ["tests.tasks.send_email"], "priority_levels": 5},
            "legacy": {"functions": ["tests.tasks.crunch"], "serializer": "pickle"},
        }
    }
)
EMAIL = SPECS["email"]


async def _ids(lister: JobLister, state: ListState, offset: int = 0, limit: int = 200) -> list[str]:
    page = await lister.page(EMAIL, state, offset, limit)
    return [item.job_id for item in page.items]


async def test_each_state_lists_its_jobs_with_details(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    await producer.enqueue("email", "send_email", "a@example.com", job_id="w-normal")
    await producer.enqueue("email", "send_email", "b@example.com", job_id="w-urgent", priority=0)
    await producer.enqueue("email", "send_email", "c@example.com", job_id="later", defer_seconds=600)
    await producer.enqueue("email", "send_email", "d@example.com", job_id="running")
    await pick_up(redis, EMAIL, "running")
    await redis.set(
        keys.progress_key("running"), Progress(percent=30, message="half", updated_at=1.0).model_dump_json()
    )
    await producer.enqueue("email", "send_email", "e@example.com", job_id="retrying")
    await pick_up(redis, EMAIL, "retrying")
    await fail_with_retry(redis, EMAIL, "retrying", "SMTPError: try later", backoff_ms=300_000)
    await producer.enqueue("email", "send_email", "f@example.com", job_id="done")
    await pick_up(redis, EMAIL, "done")
    await finish(redis, EMAIL, "done", success=True, result={"sent": True})
    await producer.enqueue("email", "send_email", "g@example.com", job_id="dead")
    await pick_up(redis, EMAIL, "dead")
    await bury(redis, EMAIL, "dead", error="SMTPError: mailbox gone")

    lister = JobLister(redis)
    waiting = await lister.page(EMAIL, ListState.WAITING)
    assert waiting.total == 2 and [i.job_id for i in waiting.items] == ["w-urgent", "w-normal"]
    urgent = waiting.items[0]
    assert (urgent.function, urgent.priority, urgent.attempts) == ("send_email", 0, 0)
    assert urgent.enqueued_at is not None and urgent.scheduled_for is not None and urgent.note is None

    delayed = await lister.page(EMAIL, ListState.DELAYED)
    assert delayed.total == 2 and [i.job_id for i in delayed.items] == ["retrying", "later"]
    retrying = delayed.items[0]
    assert (retrying.attempts, retrying.error) == (1, "SMTPError: try later")

    active = await lister.page(EMAIL, ListState.ACTIVE)
    assert active.total == 1 and [i.job_id for i in active.items] == ["running"]
    running = active.items[0]
    assert running.progress is not None and running.progress.message == "half"
    assert (running.function, running.priority, running.attempts) == ("send_email", EMAIL.normal_priority, 1)
    assert running.lease_expires_at is not None and running.scheduled_for is not None

    completed = await lister.page(EMAIL, ListState.COMPLETED)
    assert completed.total == 1
    done = completed.items[0]
    assert (done.job_id, done.function, done.attempts) == ("done", "send_email", 1)
    assert done.started_at is not None and done.finished_at is not None and done.error is None

    failed = await lister.page(EMAIL, ListState.FAILED)
    assert failed.total == 1
    dead = failed.items[0]
    assert (dead.job_id, dead.function, dead.error, dead.attempts) == (
        "dead",
        "send_email",
        "SMTPError: mailbox gone",
        EMAIL.max_tries,
    )
    assert dead.finished_at is not None and dead.priority == EMAIL.normal_priority


async def test_completed_and_failed_are_newest_first_and_paged(redis: Redis) -> None:
    k = qkeys(EMAIL)
    base = now_ms()
    await redis.zadd(k.completed, {f"c{i}": base - 1000 * (10 - i) for i in range(10)})
    await redis.zadd(k.completed, {"too-old": base - EMAIL.retention.completed_seconds * 1000 - 5000})
    for i in range(5):
        await redis.zadd(k.dlq_index, {f"d{i}": base + i})
    lister = JobLister(redis)
    page = await lister.page(EMAIL, ListState.COMPLETED, 0, 4)
    assert page.total == 10
    assert [i.job_id for i in page.items] == ["c9", "c8", "c7", "c6"]
    assert all(i.note == "result expired" and i.finished_at for i in page.items)
    assert await _ids(lister, ListState.COMPLETED, 8, 4) == ["c1", "c0"]  # the expired one is not listed
    assert await _ids(lister, ListState.COMPLETED, 10, 4) == []
    assert await _ids(lister, ListState.FAILED, 1, 2) == ["d3", "d2"]
    failed = await lister.page(EMAIL, ListState.FAILED, 0, 1)
    assert failed.total == 5 and failed.items[0].note == "dead-letter entry gone"


def _reference(
    entries: dict[str, tuple[int, int]], running: set[str], stalled: str, now: int
) -> tuple[list[str], list[str]]:
    """Expected waiting and delayed orders, from (priority, ready ms) per id: a job whose lease ran out
    first (the next pickup sweeps it back ahead of the rest), then by band and ready time."""
    ready = sorted(
        (i for i, (p, at) in entries.items() if at <= now and i not in running and i != stalled),
        key=lambda i: (entries[i][0], entries[i][1], i),
    )
    waiting = [stalled, *ready]
    delayed = sorted((i for i, (_, at) in entries.items() if at > now), key=lambda i: (entries[i][1], entries[i][0], i))
    return waiting, delayed


async def test_waiting_and_delayed_pages_match_a_reference_at_every_offset(redis: Redis) -> None:
    rng = random.Random(7)
    seconds, micros = await redis.time()
    now = seconds * 1000 + micros // 1000  # Redis' clock, which the lists read
    entries: dict[str, tuple[int, int]] = {}
    for n in range(120):
        priority = rng.randrange(EMAIL.priority_levels)
        # Many ties on purpose: jobs enqueued in one batch share a millisecond. Delayed ones stay delayed
        # for the length of the test.
        at = now + rng.choice([-5000, -10, -3, -3, -3, 0, 600_000, 600_050, 600_050, 86_400_000]) - rng.randrange(3)
        entries[f"j{n:03d}"] = (priority, at)
    await redis.zadd(EMAIL.queue_key, {i: scores.job_score(at, p, EMAIL) for i, (p, at) in entries.items()})
    ready = [i for i, (_, at) in entries.items() if at <= now]
    running = set(rng.sample(ready, 9))
    for job_id in running:
        await pick_up(redis, EMAIL, job_id, lease_ms=600_000)
    stalled = next(i for i in ready if i not in running)
    await pick_up(redis, EMAIL, stalled, lease_ms=-1)  # its worker crashed: waiting again
    waiting, delayed = _reference(entries, running, stalled, now)

    lister = JobLister(redis)
    assert (await lister.page(EMAIL, ListState.WAITING, 0, 1)).total == len(waiting)
    assert (await lister.page(EMAIL, ListState.DELAYED, 0, 1)).total == len(delayed)
    assert (await lister.page(EMAIL, ListState.ACTIVE, 0, 1)).total == len(running)
    counts = (await CountsReader(redis).read({"email": EMAIL}))["email"]
    assert (counts.waiting, counts.delayed, counts.active) == (len(waiting), len(delayed), len(running))
    for limit in (1, 7, 200):
        for offset in range(0, len(entries) + 2, 3 if limit == 1 else 1):
            got = await _ids(lister, ListState.WAITING, offset, limit)
            assert got == waiting[offset : offset + limit], (offset, limit)
            got = await _ids(lister, ListState.DELAYED, offset, limit)
            assert got == delayed[offset : offset + limit], (offset, limit)
    in_run_order = sorted(running, key=lambda i: (entries[i][0], entries[i][1], i))
    assert await _ids(lister, ListState.ACTIVE, 0, 200) == in_run_order
    assert await _ids(lister, ListState.ACTIVE, 3, 4) == in_run_order[3:7]


async def test_a_page_is_one_script_whatever_the_offset(redis: Redis) -> None:
    """The script answers a deep page of a big queue with a bounded number of calls (no walk past the offset)."""
    now = now_ms()
    await redis.zadd(
        EMAIL.queue_key, {f"j{i:05d}": scores.job_score(now - 100_000 + i, 2, EMAIL) for i in range(20_000)}
    )
    await redis.zadd(
        EMAIL.queue_key, {f"d{i:05d}": scores.job_score(now + 1000 + i, i % 5, EMAIL) for i in range(20_000)}
    )
    lister = JobLister(redis)
    assert await _ids(lister, ListState.WAITING, 19_998, 5) == ["j19998", "j19999"]
    assert await _ids(lister, ListState.DELAYED, 15_000, 2) == ["d15000", "d15001"]
    await redis.config_resetstat()
    await run_scripts(redis, [(LIST_SCRIPT.arq, *script_args(EMAIL, ListState.WAITING, 19_000, 50))])
    info = await redis.info("commandstats")
    assert info["cmdstat_zrange"]["calls"] <= EMAIL.priority_levels


async def test_pickle_queue_is_listed_without_unpickling(redis: Redis, redis_url: str) -> None:
    arq = ArqRedis.from_url(redis_url)
    try:
        await arq.enqueue_job("crunch", {"n": 1}, _job_id="legacy-1", _queue_name="arq:queue:legacy")
        await arq.enqueue_job("crunch", {"n": 2}, _job_id="legacy-2", _queue_name="arq:queue:legacy")
    finally:
        await arq.aclose()
    spec = SPECS["legacy"]
    lister = JobLister(redis)
    page = await lister.page(spec, ListState.WAITING)
    assert [(i.job_id, i.function, i.note) for i in page.items] == [
        ("legacy-1", "crunch", PICKLE_NOTE),
        ("legacy-2", "crunch", PICKLE_NOTE),
    ]
    await finish(redis, spec, "legacy-1", success=True, result={"secret": "hush-hush"}, serializer="pickle")
    done = (await lister.page(spec, ListState.COMPLETED)).items[0]
    assert (done.job_id, done.function, done.note) == ("legacy-1", "crunch", PICKLE_NOTE)
    assert "hush-hush" not in json.dumps(done.model_dump())
    # A hostile payload is read as opcodes only, never run.
    hostile = pickle.dumps({"f": "crunch", "a": (_Boom(),), "k": {}, "et": 1})
    await redis.set(keys.job_key("legacy-2"), hostile)
    item = (await lister.page(spec, ListState.WAITING)).items[0]
    assert (item.job_id, item.function, item.note) == ("legacy-2", "crunch", PICKLE_NOTE)


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("raise SystemExit('unpickled!')",))


async def test_bounds_are_checked(redis: Redis) -> None:
    lister = JobLister(redis)
    for offset, limit in ((-1, 10), (0, 0), (0, 201)):
        with pytest.raises(ValueError, match=r"limit 1\.\.200"):
            await lister.page(EMAIL, ListState.WAITING, offset, limit)
