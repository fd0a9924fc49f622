"""The latency-target signal served by a real exporter: Prometheus, the External Metrics API (as the HPA
controller asks for it) and KEDA's endpoint, for the queues that list wait_target and no others."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from arqscale.exporter.external_metrics import BASE
from arqscale.exporter.quantities import parse_quantity
from arqscale.exporter.wait_target import KEDA_FIELD, METRIC
from arqscale.worker.loop import Worker
from exporter_support import get, parse_exposition, running_exporter

SPECS = parse_queues(
    {
        "queues": {
            "reports": {
                "functions": ["tests.tasks.send_email"],
                "concurrency": 4,
                "autoscaling": {"metrics": ["backlog", "wait_target"], "target_wait_seconds": 30},
            },
            "plain": {"functions": ["tests.tasks.send_email"]},
        }
    }
)


async def test_served_for_queues_that_ask_for_it(redis: Redis, redis_url: str) -> None:
    producer = Producer(redis, SPECS)
    for i in range(120):
        await producer.enqueue("reports", "send_email", i)
    async with running_exporter(redis_url, SPECS) as exporter:
        await asyncio.sleep(0.5)  # a few refreshes
        api = f"https://127.0.0.1:{exporter.api_port}{BASE}"
        status, body = await get(f"{api}/namespaces/default/{METRIC}?labelSelector=queue%3Dreports", ssl=False)
        assert status == 200, body
        (item,) = json.loads(body)["items"]
        # No try has finished yet: the service time is taken as the target, one slot per waiting job:
        # 120 waiting / concurrency 4 = 30 workers.
        assert item["metricLabels"] == {"queue": "reports"} and parse_quantity(item["value"]) == 30

        status, body = await get(f"{api}/namespaces/default/{METRIC}?labelSelector=queue%3Dplain", ssl=False)
        assert status == 404 and "wait_target" in json.loads(body)["message"]

        status, body = await get(api, ssl=False)
        assert METRIC in {r["name"] for r in json.loads(body)["resources"]}

        base = f"http://127.0.0.1:{exporter.http_port}"
        _, page = await get(f"{base}/metrics")
        samples = parse_exposition(page)
        assert samples[f'{METRIC}{{queue="reports"}}'] == 30
        assert f'{METRIC}{{queue="plain"}}' not in samples
        assert samples['arqscale_queue_arrival_rate{queue="reports"}'] >= 0

        _, keda = await get(f"{base}/keda/v1/queues/reports")
        assert json.loads(keda)[KEDA_FIELD] == 30
        _, keda = await get(f"{base}/keda/v1/queues/plain")
        assert KEDA_FIELD not in json.loads(keda)


async def test_the_totals_hash_gives_the_rates(redis: Redis, redis_url: str) -> None:
    """With the worker scripts' counters: 10 jobs/s of 0.4 s, nothing waiting: 10 * 0.4 / 4 = 1 worker."""
    totals = "arqscale:reports:totals"
    async with running_exporter(redis_url, SPECS, refresh_seconds=0.1) as exporter:
        n = 0.0
        for _ in range(40):
            n += 1
            await redis.hset(totals, mapping={"enqueued": n, "completed": n, "run_ms": n * 400})
            await asyncio.sleep(0.1)
        estimate = exporter.cache.wait_target.estimates["reports"]
        assert estimate.service_seconds is not None and abs(estimate.service_seconds - 0.4) < 0.05
        assert 0.5 < estimate.raw_workers < 1.5


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_drain()
        await asyncio.wait_for(task, 10)


async def test_real_workers_feed_the_signal_through_their_totals(redis: Redis, redis_url: str) -> None:
    """End to end: real worker scripts count into the totals hash (events issue), the exporter turns them into
    the arrival rate and the service time: about 20 jobs/s of 0.1 s each, one worker of concurrency 4
    (Little's law: 20 * 0.1 / 4 = 0.5 workers busy)."""
    specs = parse_queues(
        {
            "queues": {
                "steady": {
                    "functions": ["worker_tasks.sleep"],
                    "concurrency": 4,
                    "poll_interval": 0.05,
                    "autoscaling": {"metrics": ["wait_target"], "target_wait_seconds": 30},
                }
            }
        }
    )
    producer = Producer(redis, specs)
    async with (
        running_exporter(redis_url, specs, refresh_seconds=0.2) as exporter,
        running(Worker(specs["steady"], redis)),
    ):
        for _ in range(120):  # 6 s at 20 jobs/s
            await producer.enqueue("steady", "sleep", 0.1)
            await asyncio.sleep(0.05)
        estimate = exporter.cache.wait_target.estimates["steady"]
    totals = await redis.hgetall("arqscale:steady:totals")
    assert int(totals[b"completed"]) >= 80
    assert estimate.service_seconds is not None and 0.08 < estimate.service_seconds < 0.5
    # A loaded machine enqueues slower than asked: the rate is what arrived, at most the 20/s asked for.
    assert 5 < estimate.arrival_rate < 25
    assert 0 < estimate.busy_workers < 3
