"""The latency-target signal served by a real exporter: Prometheus, the External Metrics API (as the HPA
controller asks for it) and KEDA's endpoint, for the queues that list wait_target and no others."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis

from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from arqscale.exporter.external_metrics import BASE
from arqscale.exporter.quantities import parse_quantity
from arqscale.exporter.wait_target import KEDA_FIELD, METRIC
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
