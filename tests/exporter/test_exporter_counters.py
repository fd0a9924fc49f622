"""The exporter's job counters: read from each queue's totals hash (written by the scripts), so they survive an
exporter restart and every replica serves the same numbers; BullMQ's own names for completed and failed."""

from __future__ import annotations

from redis.asyncio import Redis

from arqscale.core.events import totals_key
from exporter_support import SPECS, get, parse_exposition, running_exporter, seed_every_state


async def scrape(redis_url: str) -> dict[str, float]:
    async with running_exporter(redis_url) as exp:
        _, text = await get(f"http://127.0.0.1:{exp.http_port}/metrics")
    return parse_exposition(text)


async def test_counters_come_from_the_totals_hash_and_agree_across_exporters(redis: Redis, redis_url: str) -> None:
    await seed_every_state(redis)
    # What workers would have added (the scripts' HINCRBYs; tests/worker/test_events.py runs real ones).
    await redis.hset(
        totals_key("email"),
        mapping={"completed": 40, "failed": 7, "retried": 5, "dead": 2, "cancelled": 1, "requeued": 3, "run_ms": 1500},
    )
    first = await scrape(redis_url)
    second = await scrape(redis_url)  # another replica, or the same one restarted: nothing kept in memory
    for samples in (first, second):
        assert samples['bullmq_job_completed_total{queue="email"}'] == 40
        assert samples['bullmq_job_failed_total{queue="email"}'] == 2  # BullMQ's failed: failed for good
        assert samples['arqscale_job_failed_tries_total{queue="email"}'] == 7
        assert samples['arqscale_job_retried_total{queue="email"}'] == 5
        assert samples['arqscale_job_dead_total{queue="email"}'] == 2
        assert samples['arqscale_job_cancelled_total{queue="email"}'] == 1
        assert samples['arqscale_job_requeued_total{queue="email"}'] == 3
        assert samples['arqscale_job_run_seconds_total{queue="email"}'] == 1.5
        # The producer's enqueues were counted by its script: 7 on email, 7 on image_processing.
        assert samples['arqscale_job_enqueued_total{queue="email"}'] == 7
        assert samples['arqscale_job_enqueued_total{queue="image_processing"}'] == 7
        assert samples['bullmq_job_completed_total{queue="idle"}'] == 0
    assert {k: v for k, v in first.items() if "_total{" in k} == {k: v for k, v in second.items() if "_total{" in k}
    arq_queues = [name for name, spec in SPECS.items() if spec.backend == "arq"]
    assert {k for k in first if k.startswith("bullmq_job_completed_total")} == {
        f'bullmq_job_completed_total{{queue="{name}"}}' for name in arq_queues
    }
