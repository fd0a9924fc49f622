"""A batch of enqueues is one script call (``producer.ENQUEUE``): every job of the batch is written as a lone
enqueue would write it, in order (the same id twice is one job), and its `waiting` events, batched into entries
of one function each, read back job by job with the right function and no try, in the order the jobs were sent."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from arqscale.core import event_stream, producer
from arqscale.core.events import EVENTS_PER_ENTRY, events_key
from arqscale.core.keys import job_key
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.spec import QueueSpec, parse_queues

SPEC: QueueSpec = parse_queues({"queues": {"q": {"functions": ["tasks.add", "tasks.record", "tasks.noop"]}}})["q"]

# (id, function, delayed): ids drawn from a few so that a batch repeats some; functions from three.
REQUESTS = st.lists(
    st.tuples(st.sampled_from([f"j{i}" for i in range(12)]), st.sampled_from(["add", "record", "noop"]), st.booleans()),
    min_size=1,
    max_size=70,
)


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests=REQUESTS, chunk=st.sampled_from([3, 7, producer.ENQUEUE_BATCH_MAX]))
async def test_a_batch_enqueues_and_announces_each_new_job_in_order(
    redis: Redis, requests: list[tuple[str, str, bool]], chunk: int
) -> None:
    await redis.flushall()
    producer.ENQUEUE_BATCH_MAX, saved = chunk, producer.ENQUEUE_BATCH_MAX  # batches split into several calls too
    try:
        reqs = [JobRequest(function=f, job_id=i, defer_seconds=60 if d else None) for i, f, d in requests]
        results = await Producer(redis, {"q": SPEC}).enqueue_many("q", reqs)
    finally:
        producer.ENQUEUE_BATCH_MAX = saved
    first: dict[str, tuple[str, bool]] = {}
    for job_id, function, delayed in requests:
        first.setdefault(job_id, (function, delayed))
    # The first request of an id creates the job; a later one in the same batch finds it.
    first_at: dict[str, int] = {}
    for n, (job_id, _, _) in enumerate(requests):
        first_at.setdefault(job_id, n)
    assert [r.created for r in results] == [first_at[job_id] == n for n, (job_id, _, _) in enumerate(requests)]
    for job_id in first:
        assert await redis.exists(job_key(job_id))
        assert (await redis.zscore(SPEC.queue_key, job_id)) is not None
    events = await event_stream.history(redis, "q")
    wanted = [("delayed" if d else "waiting", i, f) for i, (f, d) in first.items()]
    assert [(e.event, e.job, e.func) for e in events] == wanted
    assert all(e.job_try is None for e in events)
    assert [e.delay_ms for e in events] == [60_000 if d else None for _, (_, d) in first.items()]
    # Consecutive waiting events of one function share entries of up to EVENTS_PER_ENTRY.
    entries = await redis.xrange(events_key("q"))
    assert all(fields.get(b"jobs", b"").count(b" ") <= 3 * EVENTS_PER_ENTRY for _, fields in entries)
    assert len(entries) <= len(events)
    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids)
    totals = await redis.hget("arqscale:q:totals", "enqueued")
    assert int(totals or 0) == len(first)
