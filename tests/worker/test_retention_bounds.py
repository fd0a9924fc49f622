"""Redis memory is bounded by configuration, not by throughput (issue 10, point 7).

``retention.completed_max`` and ``failed_max`` bound the stored results themselves: an id trimmed from
``:completed`` (or the dead-letter index) takes its ``arq:result:<id>`` key with it, in the finish script.
Generated limits and outcome sequences, the real scripts on the test redis-server.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from arqscale.worker.pickup import Finish, QueueOps


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    completed_max=st.integers(1, 30),
    failed_max=st.integers(1, 30),
    outcomes=st.lists(st.lists(st.booleans(), min_size=1, max_size=40), min_size=1, max_size=4),
)
async def test_stored_results_never_exceed_the_count_limits(
    redis: Redis, completed_max: int, failed_max: int, outcomes: list[list[bool]]
) -> None:
    await redis.flushall()
    spec = parse_queues(
        {
            "queues": {
                "q": {
                    "functions": ["worker_tasks.add"],
                    "retention": {"completed_max": completed_max, "failed_max": failed_max},
                }
            }
        }
    )["q"]
    k = QueueKeys.for_queue("q", spec.queue_key)
    producer, ops = Producer(redis, {"q": spec}), QueueOps(redis, spec, "w")
    n = 0
    for batch in outcomes:  # each batch: one pickup, then one finish call with a record per job
        ids = [f"j{n + i}" for i in range(len(batch))]
        n += len(batch)
        await producer.enqueue_many("q", [JobRequest(function="add", args=[1, 2], job_id=i) for i in ids])
        picked = (await ops.pickup(len(ids), f"w.{n}")).jobs
        assert sorted(j.job_id for j in picked) == sorted(ids)
        records = [
            Finish("ok", j.job_id, b'{"s":true}', token=j.token)
            if ok
            else Finish("dead", j.job_id, "{}", b'{"s":false}', token=j.token)
            for j, ok in zip(sorted(picked, key=lambda j: int(j.job_id[1:])), batch, strict=True)
        ]
        assert await ops.finish(records) == []
        results = len([x async for x in redis.scan_iter("arq:result:*")])
        assert await redis.zcard(k.completed) <= completed_max and await redis.zcard(k.dlq_index) <= failed_max
        # The bound that matters: the result keys themselves, whatever the throughput.
        assert results <= completed_max + failed_max
        assert results == await redis.zcard(k.completed) + await redis.zcard(k.dlq_index)
