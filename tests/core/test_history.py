"""The dashboard's history store against a real redis-server: one sample per window, trimmed, rates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from arqscale.core import history
from arqscale.core.models import QueueCounts

NOW = 1_800_000_000.0


def _counts(queue: str, waiting: int) -> dict[str, QueueCounts]:
    return {queue: QueueCounts(queue=queue, waiting=waiting, active=1, delayed=2, oldest_waiting_seconds=4.5)}


async def test_one_sample_per_window_whoever_writes(redis: Redis) -> None:
    # Two samplers (API replicas) in the same window: the first sample stays, the second adds nothing.
    assert await history.record(redis, _counts("q", 5), {"q": 3}, {"q": {"completed": 10}}, NOW) == 1
    assert await history.record(redis, _counts("q", 9), {"q": 3}, {"q": {"completed": 11}}, NOW + 1) == 0
    read = await history.read(redis, "q", now=NOW + 5)
    assert [s.waiting for s in read.samples] == [5]
    assert read.samples[0].workers == 3 and read.samples[0].oldest_waiting_seconds == 4.5


async def test_rates_from_counter_deltas_and_the_hour_kept(redis: Redis) -> None:
    for i in range(400):  # more than an hour of windows
        totals = {"completed": 20 * i, "failed": i // 10}
        await history.record(redis, _counts("q", i), {}, {"q": totals}, NOW + 10 * i)
    end = NOW + 10 * 399
    kept = await redis.zcard(history.history_key("q"))
    assert kept == history.KEEP_SECONDS // history.STEP_SECONDS + 2
    assert 0 < await redis.ttl(history.history_key("q")) <= 2 * history.KEEP_SECONDS
    read = await history.read(redis, "q", now=end)
    assert read.samples[-1].waiting == 399
    assert all(s.completed_per_second == 2.0 for s in read.samples)  # 20 per 10 s, the first one included
    assert {s.failed_per_second for s in read.samples} == {0.0, 0.1}
    recent = await history.read(redis, "q", since_seconds=60, now=end)
    assert [s.waiting for s in recent.samples] == list(range(393, 400))


async def test_counters_reset_give_no_rate_rather_than_a_negative_one(redis: Redis) -> None:
    await history.record(redis, _counts("q", 1), {}, {"q": {"completed": 50}}, NOW)
    await history.record(redis, _counts("q", 1), {}, {"q": {"completed": 3}}, NOW + 10)
    read = await history.read(redis, "q", now=NOW + 10)
    assert read.samples[-1].completed_per_second is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=40)), max_size=10))
def test_unreadable_members_are_skipped(members: list[bytes | str]) -> None:
    parsed = history.samples([*members, b'{"at": 5, "waiting": 2}'])
    assert parsed[-1].waiting == 2
