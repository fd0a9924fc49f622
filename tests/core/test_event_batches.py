"""Batched event entries against a real redis-server: the `active` and `completed` events of many jobs written as
one entry by the scripts' ``emit_jobs``, read back per job with their own consecutive ids, by every reader
(history, a live tail, a resume in the middle of an entry, the webhook deliverer's split)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from arqscale.core import event_stream
from arqscale.core.events import EVENTS_PER_ENTRY, Event, events_key, id_tuple, pack_jobs, split_entry, unpack_jobs
from event_support import Job, emit_jobs

# Ids are any bytes arq accepts: spaces, digits, NUL, invalid UTF-8 (the length prefix keeps them apart).
job_ids = st.binary(min_size=1, max_size=40)
jobs = st.lists(
    st.tuples(job_ids, st.integers(1, 10**6), st.none() | st.integers(0, 10**9)),
    min_size=1,
    max_size=60,
    unique_by=lambda j: j[0],
)


def expected(event: str, batch: list[Job]) -> list[tuple[str, str, int, int | None]]:
    return [(event, job_id.decode("utf-8", "surrogateescape"), t, d) for job_id, t, d in batch]


def seen(events: list[Event]) -> list[tuple[str, str, int | None, int | None]]:
    return [(e.event, e.job, e.job_try, e.duration_ms) for e in events]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=jobs, event=st.sampled_from(["active", "completed"]))
async def test_any_batch_reads_back_job_by_job_with_consecutive_ids(redis: Redis, batch: list[Job], event: str) -> None:
    await redis.delete(events_key("q"))
    if event == "active":
        batch = [(i, t, None) for i, t, _ in batch]
    await emit_jobs(redis, "q", event, batch)
    entries = await redis.xrange(events_key("q"))
    # Up to EVENTS_PER_ENTRY jobs to an entry; a single job keeps the one-event entry.
    assert len(entries) == -(-len(batch) // EVENTS_PER_ENTRY)
    assert all((b"jobs" in fields) == (len(batch) > 1) for _, fields in entries)
    events = await event_stream.history(redis, "q")
    assert seen(events) == expected(event, batch)
    assert all(e.worker == "w-1" for e in events)
    # Each entry's jobs take consecutive ids from the entry's own; ids only grow.
    ids = [id_tuple(e.id) for e in events]
    for n, (entry_id, _) in enumerate(entries):
        ms, seq = id_tuple(entry_id.decode())
        chunk = ids[n * EVENTS_PER_ENTRY : (n + 1) * EVENTS_PER_ENTRY]
        assert chunk == [(ms, seq + k) for k in range(len(chunk))]
    assert ids == sorted(set(ids))
    # The next entry comes after every id the batch took, so no two events share one.
    after = await redis.xadd(events_key("q"), {"event": "waiting", "job": "next", "at": 1})
    assert id_tuple(after.decode()) > ids[-1]
    assert await event_stream.last_id(redis, "q") == after.decode()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=jobs.filter(lambda b: len(b) > 1), cut=st.integers(0, 59))
async def test_a_reader_resuming_inside_a_batch_gets_exactly_the_rest(redis: Redis, batch: list[Job], cut: int) -> None:
    """An SSE ``Last-Event-ID`` or ``after=`` naming the k-th job of a batched entry: the later jobs follow,
    then the entries after it, each once."""
    await redis.delete(events_key("q"))
    await emit_jobs(redis, "q", "completed", batch)
    await emit_jobs(redis, "q", "completed", [(b"later-" + b"x" * 40, 1, 5)])
    every = await event_stream.history(redis, "q")
    k = cut % len(batch)
    after = every[k].id
    rest = await event_stream.history(redis, "q", after=after)
    assert [e.id for e in rest] == [e.id for e in every[k + 1 :]]
    tail = event_stream.Events(redis, "q", after=after, block_ms=10)
    got: list[Event] = []
    while len(got) < len(every) - k - 1:
        read = await tail.read()
        assert read, "the tail stopped short"
        got += read
    assert [e.id for e in got] == [e.id for e in every[k + 1 :]]
    assert await tail.read(10) == []
    # One job's events only, resumed in the middle: the job's own event when it comes after the point.
    target = every[-2].job
    assert [e.job for e in await event_stream.history(redis, "q", after=after, job=target)] == (
        [target] if len(batch) - 1 > k else []
    )


async def test_a_live_tail_from_now_sees_each_job_of_a_batch_once(redis: Redis) -> None:
    tail = event_stream.Events(redis, "q", block_ms=10)
    await tail.start()
    await emit_jobs(redis, "q", "active", [(b"a", 1, None), (b"b", 2, None), (b"c", 1, None)])
    assert [(e.job, e.job_try) for e in await tail.read()] == [("a", 1), ("b", 2), ("c", 1)]
    await emit_jobs(redis, "q", "active", [(b"d", 1, None)])
    assert [e.job for e in await tail.read()] == ["d"]
    assert await tail.read(10) == []


@given(packed=st.binary(max_size=200))
def test_a_jobs_field_that_does_not_parse_yields_the_jobs_before_it(packed: bytes) -> None:
    """Hostile or cut bytes in ``jobs``: no exception, and what parses is a prefix of well-formed triples."""
    parsed = unpack_jobs(packed)
    rebuilt = b"".join(b"%s %s %d %s" % (t, d, len(i), i) for t, d, i in parsed)
    assert packed.startswith(rebuilt)
    assert len(split_entry("5-0", {b"event": b"active", b"jobs": packed})) == len(parsed)


def test_an_entry_without_jobs_is_one_event_under_its_own_id() -> None:
    assert split_entry(b"7-3", {b"event": b"waiting", b"job": b"x"}) == [("7-3", {b"event": b"waiting", b"job": b"x"})]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=jobs)
async def test_a_workers_ready_made_jobs_field_is_the_one_the_script_builds(redis: Redis, batch: list[Job]) -> None:
    """A finish call takes its successes' `completed` entries ready-made from the worker (``pack_jobs``): byte for
    byte what ``emit_jobs`` builds, so readers cannot tell who built them."""
    if len(batch) < 2:
        return
    await redis.delete(events_key("q"))
    await emit_jobs(redis, "q", "completed", batch)
    built = [fields[b"jobs"] for _, fields in await redis.xrange(events_key("q"))]
    ready_made = [
        pack_jobs([(t, d, job_id) for job_id, t, d in batch[i : i + EVENTS_PER_ENTRY]])
        for i in range(0, len(batch), EVENTS_PER_ENTRY)
    ]
    assert built == ready_made
