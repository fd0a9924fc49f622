"""Promote and clean-completed against a real redis-server, with the worker protocol's own writes."""

from __future__ import annotations

from redis.asyncio import Redis

from arqscale.core import job_actions, keys, scores
from arqscale.core.event_stream import history as event_history
from arqscale.core.job_actions import PromoteOutcome
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from protocol_steps import finish, pick_up

SPECS = parse_queues({"queues": {"q": {"functions": ["tests.tasks.send_email"]}}})
SPEC = SPECS["q"]


async def test_promote_keeps_the_band_and_leaves_ready_and_running_jobs(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    for priority in (0, SPEC.normal_priority, SPEC.priority_levels - 1):
        job_id = f"later-{priority}"
        await producer.enqueue("q", "send_email", "x", job_id=job_id, defer_seconds=3600, priority=priority)
        assert await job_actions.promote(redis, SPEC, job_id) is PromoteOutcome.PROMOTED
        score = await redis.zscore(SPEC.queue_key, job_id)
        assert score is not None
        kept, ready_ms = scores.split_score(score, SPEC)
        assert kept == priority and ready_ms <= scores.now_ms()
        assert await job_actions.promote(redis, SPEC, job_id) is PromoteOutcome.NOT_DELAYED
    await producer.enqueue("q", "send_email", "x", job_id="run-1", defer_seconds=0)
    await pick_up(redis, SPEC, "run-1")
    assert await job_actions.promote(redis, SPEC, "run-1") is PromoteOutcome.NOT_DELAYED
    assert await job_actions.promote(redis, SPEC, "nope") is PromoteOutcome.NOT_FOUND
    events = [e for e in await event_history(redis, "q") if e.job == "later-0"]
    assert [(e.event, e.reason) for e in events][-1] == ("waiting", "promoted")


async def test_clean_completed_is_bounded_and_oldest_first(redis: Redis) -> None:
    producer = Producer(redis, SPECS)
    for i in range(5):
        await producer.enqueue("q", "send_email", "x", job_id=f"done-{i}")
        await pick_up(redis, SPEC, f"done-{i}")
        await finish(redis, SPEC, f"done-{i}", success=True, result=i)
    completed = keys.QueueKeys.for_queue("q", SPEC.queue_key).completed
    for i in range(5):  # finished i seconds apart, done-0 first
        await redis.zadd(completed, {f"done-{i}": 1_000_000 + i * 1000})
    first = await job_actions.clean_completed(redis, SPEC, before_ms=1_000_000 + 3500, limit=2)
    assert (first.deleted, first.more) == (2, True)
    assert not await redis.exists(keys.result_key("done-0")) and await redis.exists(keys.result_key("done-2"))
    second = await job_actions.clean_completed(redis, SPEC, before_ms=1_000_000 + 3500, limit=2)
    assert (second.deleted, second.more) == (2, False)
    assert await redis.exists(keys.result_key("done-4"))
    # The bound is inclusive: a job that ended in the bound's own millisecond goes ("older than 0 s").
    assert (await job_actions.clean_completed(redis, SPEC, before_ms=1_000_000 + 3999)).deleted == 0
    assert (await job_actions.clean_completed(redis, SPEC, before_ms=1_000_000 + 4000)).deleted == 1
