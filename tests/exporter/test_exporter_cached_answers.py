"""The exporter's answers built once per snapshot (the /metrics body and its gzip, External Metrics answers)
follow every new snapshot, and a cached answer is only ever given to the same question."""

from __future__ import annotations

import gzip
import json

import aiohttp
from redis.asyncio import Redis

from arqscale.core.producer import Producer
from arqscale.exporter.external_metrics import BASE
from exporter_support import SPECS, get, parse_exposition, running_exporter, seed_every_state


async def refreshed(exp: object) -> None:
    """A new snapshot now, whatever the loop's timing."""
    await exp.cache.refresh()  # type: ignore[attr-defined]


async def test_metrics_body_and_its_gzip_follow_each_snapshot(redis: Redis, redis_url: str) -> None:
    extra = {f"extra{i:03d}": SPECS["idle"].model_copy(update={"name": f"extra{i:03d}"}) for i in range(60)}
    specs = {**SPECS, **extra}
    async with running_exporter(redis_url, specs, refresh_seconds=60) as exp:  # the loop refreshes once, at start
        await refreshed(exp)
        url = f"http://127.0.0.1:{exp.http_port}/metrics"
        _, before = await get(url)
        assert parse_exposition(before)['bullmq_queue_waiting{queue="email"}'] == 0
        await Producer(redis, SPECS).enqueue("email", "send_email", 1)
        _, cached = await get(url)
        assert cached == before  # same snapshot, same bytes
        await refreshed(exp)
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                assert resp.headers["Content-Encoding"] == "gzip"  # 64 queues: above the gzip threshold
                packed = await resp.read()
            async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
                plain = await resp.read()
        assert gzip.decompress(packed) == plain
        samples = parse_exposition(plain.decode())
        assert samples['bullmq_queue_waiting{queue="email"}'] == 1
        assert samples['bullmq_job_count{queue="email",state="waiting"}'] == 1
        assert samples['arqscale_job_enqueued_total{queue="email"}'] == 1
        assert samples['bullmq_queue_waiting{queue="extra059"}'] == 0


async def metric(exp: object, name: str, selector: str, namespace: str = "default") -> tuple[int, dict[str, object]]:
    url = f"https://127.0.0.1:{exp.api_port}{BASE}/namespaces/{namespace}/{name}"  # type: ignore[attr-defined]
    status, body = await get(url, params={"labelSelector": selector}, ssl=False)
    return status, json.loads(body)


def values(answer: dict[str, object]) -> dict[str, str]:
    items = answer["items"]
    assert isinstance(items, list)
    return {item["metricLabels"]["queue"]: item["value"] for item in items}


async def test_external_metrics_answers_are_per_question_and_per_snapshot(redis: Redis, redis_url: str) -> None:
    await seed_every_state(redis)
    async with running_exporter(redis_url, refresh_seconds=60, namespaces=frozenset({"default"})) as exp:
        await refreshed(exp)
        # Several questions on one snapshot, each asked twice: the second (cached) answer is the first one.
        asked = [
            ("bullmq_queue_waiting", "queue=email", {"email": "3"}),
            ("bullmq_queue_waiting", "queue in (email,image_processing)", {"email": "3", "image_processing": "7"}),
            ("bullmq_queue_active", "queue=email", {"email": "2"}),
            ("arqscale_queue_backlog", "queue=email", {"email": "5"}),
            ("bullmq_queue_paused", "queue=held", {"held": "2"}),
            ("bullmq_queue_waiting", "queue notin (email,image_processing,held)", {"idle": "0"}),
        ]
        for name, selector, expected in asked:
            first = await metric(exp, name, selector)
            second = await metric(exp, name, selector)
            assert first == second and first[0] == 200, (name, selector, first)
            assert values(first[1]) == expected, (name, selector)
        # A namespace this exporter does not serve is refused even for a question answered a moment ago.
        status, body = await metric(exp, "bullmq_queue_waiting", "queue=email", namespace="other")
        assert status == 404 and body["kind"] == "Status"
        # Errors are answered as before (and not from the cache of good answers).
        assert (await metric(exp, "bullmq_queue_waiting", "queue=nope"))[0] == 404
        assert (await metric(exp, "bullmq_queue_waiting", "queue in (email"))[0] == 400
        # A new snapshot: the same question gets the new count and the new timestamp.
        _, old = await metric(exp, "bullmq_queue_waiting", "queue=email")
        await Producer(redis, SPECS).enqueue("email", "send_email", 1)
        await refreshed(exp)
        _, new = await metric(exp, "bullmq_queue_waiting", "queue=email")
        assert values(new) == {"email": "4"}
        assert exp.cache.snapshot is not None
        assert exp.api_port is not None
        assert old != new
