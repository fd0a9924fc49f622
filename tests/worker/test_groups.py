"""Per-key limits in the protocol scripts, pickup by pickup (docs/design.md, "Per-key limits").

These drive ``QueueOps`` (the worker's Redis side) directly against a real redis-server, so they can count
pickups instead of seconds; tests/worker/test_group_workers.py runs the same rules in worker processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from arqscale.core.cancellation import CancelOutcome
from arqscale.core.counts import CountsReader
from arqscale.core.groups import GroupReader
from arqscale.core.keys import QueueKeys
from arqscale.core.models import JobRequest
from arqscale.core.producer import GroupError, Producer
from arqscale.core.serializers import json_dumps
from arqscale.core.spec import QueueConfigError, QueueSpec, parse_queues
from arqscale.worker.pickup import HOLD_MAX, Finish, Picked, PickupResult, QueueOps

FUNCS = ["worker_tasks.keyed", "worker_tasks.record"]


def spec_of(group: dict[str, Any] | None, **extra: Any) -> QueueSpec:
    body: dict[str, Any] = {"functions": FUNCS, **extra}
    if group is not None:
        body["group"] = group
    return parse_queues({"queues": {"q": body}})["q"]


class Pickups:
    """One simulated worker: numbered pickup tokens, and a count of the pickups made."""

    def __init__(self, redis: Redis, spec: QueueSpec, worker: str = "w1") -> None:
        self.ops = QueueOps(redis, spec, worker)
        self.worker = worker
        self.calls = 0
        self.last: PickupResult | None = None

    async def take(self, wanted: int = 10) -> list[Picked]:
        self.calls += 1
        self.last = await self.ops.pickup(wanted, f"{self.worker}.{self.calls}")
        return self.last.jobs

    async def finish(self, *jobs: Picked, kind: str = "ok") -> list[str]:
        # A retry a minute out: due "now" it would tie with a job enqueued in the same ms, and ties go by id.
        a = "" if kind == "ok" else 60_000 if kind == "retry" else 0
        records = [Finish(kind, j.job_id, a, token=j.token) for j in jobs]  # type: ignore[arg-type]
        return await self.ops.finish(records)


def ids(jobs: list[Picked]) -> set[str]:
    return {j.job_id for j in jobs}


async def running(redis: Redis, spec: QueueSpec) -> dict[bytes, bytes]:
    return await redis.hgetall(QueueKeys.for_queue(spec.name, spec.queue_key).groups + "running")  # type: ignore[no-any-return]


async def test_a_key_at_its_concurrency_waits_and_each_finish_lets_one_back(redis: Redis) -> None:
    spec = spec_of({"concurrency": 2})
    producer = Producer(redis, {"q": spec})
    for i in range(5):
        await producer.enqueue("q", "record", job_id=f"a{i}", group="alice")
    worker = Pickups(redis, spec)
    first = await worker.take()
    assert ids(first) == {"a0", "a1"}
    assert await worker.take() == []
    counts = (await CountsReader(redis).read({"q": spec}))["q"]
    # Held jobs are not `waiting`: a worker more would not run them (docs/design.md, "Per-key limits").
    assert (counts.waiting, counts.active, counts.held) == (0, 2, 3)
    await worker.finish(first[0])
    assert ids(await worker.take()) == {"a2"}
    # A resend of the same outcome is dropped by the token check and frees nothing twice.
    assert await worker.finish(first[0]) == ["a0"]
    assert await worker.take() == []
    assert await running(redis, spec) == {b"alice": b"2"}


async def test_another_key_runs_at_the_first_pickup_behind_10000_jobs_of_a_limited_key(redis: Redis) -> None:
    spec = spec_of({"concurrency": 1})
    producer = Producer(redis, {"q": spec})
    burst = [JobRequest(function="record", job_id=f"a{i}", group="alice") for i in range(10_000)]
    for i in range(0, len(burst), 1000):
        await producer.enqueue_many("q", burst[i : i + 1000])
    await producer.enqueue("q", "record", job_id="b0", group="bob")
    worker = Pickups(redis, spec)
    # Our producer routes the burst into alice's waiting set as it arrives: bob is next in line.
    assert ids(await worker.take()) == {"a0", "b0"}
    assert worker.calls == 1
    groups = {g.key: g for g in (await GroupReader(redis).page(spec)).groups}
    assert (groups["alice"].running, groups["alice"].waiting) == (1, 9_999)


async def test_plain_arq_jobs_of_a_limited_key_leave_the_queue_a_thousand_per_pickup(redis: Redis) -> None:
    spec = spec_of({"key": "user_id", "concurrency": 1})
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)
    n = 3 * HOLD_MAX
    for i in range(n):
        await arq.enqueue_job("record", user_id="alice", _job_id=f"a{i}", _queue_name=spec.queue_key)
    await arq.enqueue_job("record", user_id=7, _job_id="b0", _queue_name=spec.queue_key)
    worker = Pickups(redis, spec)
    taken: set[str] = set()
    while "b0" not in taken:
        taken |= ids(await worker.take())
        assert worker.calls <= n // HOLD_MAX + 1
        if "b0" not in taken:
            # Stopped at the hold budget with slots free: the script says "more now" (wait 0), and the worker
            # calls again at once instead of at its next poll (tests/worker/test_group_workers.py).
            assert worker.last is not None and worker.last.wait_ms == 0
    # A plain producer's burst sits in the queue until pickups move it aside, HOLD_MAX per call.
    assert worker.calls == n // HOLD_MAX
    assert worker.last is not None and worker.last.wait_ms != 0
    assert await running(redis, spec) == {b"alice": b"1", b"7": b"1"}


async def test_a_swept_lease_releases_its_keys_slot_once(redis: Redis) -> None:
    spec = spec_of({"concurrency": 1}, lease_seconds=0.05)
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "record", job_id="a0", group="alice")
    await producer.enqueue("q", "record", job_id="a1", group="alice")
    dead, alive = Pickups(redis, spec, "dead"), Pickups(redis, spec, "alive")
    [stalled] = await dead.take()
    assert stalled.job_id == "a0"
    await asyncio.sleep(0.1)  # the lease runs out (Redis' clock is this machine's)
    again = await alive.take()
    # The sweep put a0 back (its own score, first in line) and let a1 out of alice's waiting set; one runs.
    assert ids(again) == {"a0"}
    assert await running(redis, spec) == {b"alice": b"1"}
    # The stalled worker's late outcome is stale: it must not free alice's slot a second time.
    assert await dead.finish(stalled) == ["a0"]
    assert await running(redis, spec) == {b"alice": b"1"}
    await alive.finish(*again)
    assert ids(await alive.take()) == {"a1"}


async def test_every_outcome_releases_the_slot(redis: Redis) -> None:
    spec = spec_of({"concurrency": 1})
    producer = Producer(redis, {"q": spec})
    worker = Pickups(redis, spec)
    for kind in ("retry", "back", "cancel", "dead", "ok"):
        await redis.flushdb()
        await producer.enqueue("q", "record", job_id="a0", group="alice")
        await producer.enqueue("q", "record", job_id="a1", group="alice")
        [job] = await worker.take()
        if kind == "dead":
            records = [Finish("dead", job.job_id, "{}", "", token=job.token)]
            await worker.ops.finish(records)
        else:
            await worker.finish(job, kind=kind)
        assert await running(redis, spec) == {}, kind
        # One of alice's jobs runs again: the put-back one keeps its place in line, first.
        assert ids(await worker.take()) == ({"a0"} if kind == "back" else {"a1"}), kind


async def test_a_held_job_can_be_cancelled_and_the_key_is_forgotten(redis: Redis) -> None:
    spec = spec_of({"concurrency": 1})
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "record", job_id="a0", group="alice")
    await producer.enqueue("q", "record", job_id="a1", group="alice")
    worker = Pickups(redis, spec)
    [job] = await worker.take()
    assert await producer.cancel("a1", "q") == CancelOutcome.CANCELLED
    await worker.finish(job)
    assert await worker.take() == []
    assert (await GroupReader(redis).page(spec)).groups == []
    assert await redis.keys("arqscale:q:g:*") == []


async def test_the_rate_per_key_is_a_sliding_window(redis: Redis) -> None:
    spec = spec_of({"rate_limit": {"max_jobs": 2, "interval": 0.2}})
    producer = Producer(redis, {"q": spec})
    for i in range(5):
        await producer.enqueue("q", "record", job_id=f"a{i}", group="alice")
    await producer.enqueue("q", "record", job_id="b0", group="bob")
    worker = Pickups(redis, spec)
    first = await worker.take()
    assert ids(first) == {"a0", "a1", "b0"}
    # Finishing does not give a rate slot back: only time does.
    await worker.finish(*first)
    result = await worker.ops.pickup(10, "w1.x")
    assert result.jobs == []
    assert 0 < result.wait_ms <= 200  # the worker sleeps until alice's window frees a start
    later: list[Picked] = []
    for _ in range(3):  # the worker's own loop: sleep as told, pick again
        await asyncio.sleep(result.wait_ms / 1000)
        result = await worker.ops.pickup(10, f"w1.later{len(later)}{_}")
        later += result.jobs
        if later:
            break
    assert ids(later) == {"a2", "a3"}


async def test_producer_and_spec_refuse_what_cannot_work(redis: Redis) -> None:
    with pytest.raises(GroupError, match="no per-key limits"):
        await Producer(redis, {"q": spec_of(None)}).enqueue("q", "record", group="alice")
    with pytest.raises(QueueConfigError, match="needs serializer: json"):
        spec_of({"key": "user_id", "concurrency": 1}, serializer="pickle")
    with pytest.raises(QueueConfigError, match="set concurrency, rate_limit or both"):
        spec_of({"key": "user_id"})
    # On a pickle queue a group given at enqueue works: Redis never reads the payload for it.
    spec = spec_of({"concurrency": 1}, serializer="pickle")
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "record", job_id="a0", group="alice")
    await producer.enqueue("q", "record", job_id="a1", group="alice")
    assert ids(await Pickups(redis, spec).take()) == {"a0"}
