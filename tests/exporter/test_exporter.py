"""The exporter against a real redis-server: /metrics, the External Metrics API, KEDA, freshness."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from arqscale.core.counts import CountsReader
from arqscale.core.spec import QueueSpec
from arqscale.exporter.external_metrics import BASE, METRICS
from arqscale.exporter.quantities import parse_quantity
from arqscale.exporter.snapshot import SnapshotCache
from exporter_support import (
    EMAIL_EXPECTED,
    SPECS,
    get,
    parse_exposition,
    promtool,
    running_exporter,
    seed_every_state,
)
from redis_server import RedisServer


async def test_metrics_count_jobs_in_every_state(redis: Redis, redis_url: str) -> None:
    await seed_every_state(redis)
    async with running_exporter(redis_url) as exp:
        status, text = await get(f"http://127.0.0.1:{exp.http_port}/metrics")
    assert status == 200
    samples = parse_exposition(text)
    for name, field in [
        ("bullmq_queue_waiting", "waiting"),
        ("bullmq_queue_active", "active"),
        ("bullmq_queue_delayed", "delayed"),
        ("bullmq_queue_paused", "paused"),
        ("bullmq_queue_completed", "completed"),
        ("bullmq_queue_failed", "failed"),
        ("arqscale_queue_backlog", "backlog"),
    ]:
        assert samples[f'{name}{{queue="email"}}'] == EMAIL_EXPECTED[field], name
    for state in ("waiting", "active", "delayed", "paused", "completed", "failed"):
        assert samples[f'bullmq_job_count{{queue="email",state="{state}"}}'] == EMAIL_EXPECTED[state]
    # The paused queue's ready jobs are "paused", not "waiting"; the empty queue reports zeros.
    assert samples['bullmq_queue_paused{queue="held"}'] == 2
    assert samples['bullmq_queue_waiting{queue="held"}'] == 0
    assert samples['bullmq_queue_waiting{queue="image_processing"}'] == 7
    assert samples['arqscale_queue_backlog{queue="idle"}'] == 0
    # Waiting jobs were enqueued a moment ago: a small, non-negative age.
    assert 0 <= samples['arqscale_queue_oldest_waiting_seconds{queue="email"}'] < 30
    assert samples["arqscale_exporter_redis_up"] == 1
    assert samples["arqscale_exporter_refreshes_total"] >= 1
    assert samples["arqscale_exporter_refresh_errors_total"] == 0
    assert samples["arqscale_exporter_queues"] == len(SPECS)


async def test_promtool_accepts_the_exposition(redis: Redis, redis_url: str) -> None:
    await seed_every_state(redis)
    async with running_exporter(redis_url) as exp:
        _, text = await get(f"http://127.0.0.1:{exp.http_port}/metrics")
    result = check_metrics(text)
    # One finding is by design: BullMQ's own exporter calls its per-state gauge bullmq_job_count, dashboards
    # built for BullMQ query that name, and promtool reserves "_count" for histograms and summaries.
    known = 'bullmq_job_count non-histogram and non-summary metrics should not have "_count" suffix'
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert findings == [known], findings
    # Everything else is clean: the same exposition without that family passes with no finding at all.
    without = "\n".join(line for line in text.splitlines() if "bullmq_job_count" not in line) + "\n"
    clean = check_metrics(without)
    assert clean.returncode == 0 and not (clean.stdout + clean.stderr).strip(), clean.stdout + clean.stderr


def check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)


async def test_external_metrics_discovery(redis_url: str) -> None:
    async with running_exporter(redis_url) as exp:
        root = f"https://127.0.0.1:{exp.api_port}"
        status, apis = await get(f"{root}/apis", ssl=False)
        assert status == 200
        group = json.loads(apis)["groups"][0]
        assert group["name"] == "external.metrics.k8s.io"
        assert group["preferredVersion"]["groupVersion"] == "external.metrics.k8s.io/v1beta1"
        status, body = await get(f"{root}/apis/external.metrics.k8s.io", ssl=False)
        assert status == 200 and json.loads(body)["kind"] == "APIGroup"
        status, body = await get(root + BASE, ssl=False)
        resources = json.loads(body)
        assert resources["kind"] == "APIResourceList"
        assert resources["groupVersion"] == "external.metrics.k8s.io/v1beta1"
        assert {r["name"] for r in resources["resources"]} == set(METRICS)
        assert all(r["namespaced"] and r["verbs"] == ["get"] for r in resources["resources"])


async def test_external_metric_values(redis: Redis, redis_url: str) -> None:
    await seed_every_state(redis)
    async with running_exporter(redis_url) as exp:
        url = f"https://127.0.0.1:{exp.api_port}{BASE}/namespaces/default"

        async def values(metric: str, selector: str) -> tuple[int, dict[str, object]]:
            status, body = await get(f"{url}/{metric}", params={"labelSelector": selector}, ssl=False)
            return status, json.loads(body)

        status, body = await values("bullmq_queue_waiting", "queue=email")
        assert status == 200
        assert body["kind"] == "ExternalMetricValueList"
        assert body["apiVersion"] == "external.metrics.k8s.io/v1beta1"
        [item] = body["items"]  # type: ignore[misc]
        assert item["metricName"] == "bullmq_queue_waiting"
        assert item["metricLabels"] == {"queue": "email"}
        assert item["value"] == "3"
        assert time.strptime(item["timestamp"], "%Y-%m-%dT%H:%M:%SZ")

        _, body = await values("arqscale_queue_backlog", "queue in (email, image_processing)")
        assert {i["metricLabels"]["queue"]: i["value"] for i in body["items"]} == {  # type: ignore[attr-defined]
            "email": "5",
            "image_processing": "7",
        }
        _, body = await values("bullmq_queue_paused", "queue==held")
        assert [i["value"] for i in body["items"]] == ["2"]  # type: ignore[attr-defined]
        # A known queue with nothing in it answers one item of value 0, never an empty list.
        _, body = await values("bullmq_queue_waiting", "queue=idle")
        assert [i["value"] for i in body["items"]] == ["0"]  # type: ignore[attr-defined]
        # The age is a quantity in milli-units or plain seconds.
        _, body = await values("arqscale_queue_oldest_waiting_seconds", "queue=email")
        [age] = body["items"]  # type: ignore[misc]
        assert 0 <= parse_quantity(age["value"]) < 30
        # notin and != select by exclusion.
        _, body = await values("bullmq_queue_waiting", "queue notin (email,held),queue!=idle")
        assert [i["metricLabels"]["queue"] for i in body["items"]] == ["image_processing"]  # type: ignore[attr-defined]


async def test_external_metrics_errors_are_kubernetes_statuses(redis_url: str) -> None:
    async with running_exporter(redis_url) as exp:
        url = f"https://127.0.0.1:{exp.api_port}{BASE}/namespaces/default"
        status, body = await get(f"{url}/bullmq_queue_waitin", params={"labelSelector": "queue=email"}, ssl=False)
        assert status == 404
        st = json.loads(body)
        assert (st["kind"], st["reason"], st["code"]) == ("Status", "NotFound", 404)
        assert "unknown external metric 'bullmq_queue_waitin'" in st["message"]
        assert "bullmq_queue_waiting" in st["message"] and "email" in st["message"]

        status, body = await get(f"{url}/bullmq_queue_waiting", params={"labelSelector": "queue=emial"}, ssl=False)
        assert status == 404
        message = json.loads(body)["message"]
        assert "names no configured queue" in message
        assert "known queues: email, image_processing, held, idle" in message

        status, body = await get(f"{url}/bullmq_queue_waiting", params={"labelSelector": "queue in (email"}, ssl=False)
        assert status == 400
        st = json.loads(body)
        assert st["reason"] == "BadRequest" and "expected ')'" in st["message"]


async def test_keda_endpoint(redis: Redis, redis_url: str) -> None:
    await seed_every_state(redis)
    async with running_exporter(redis_url) as exp:
        status, body = await get(f"http://127.0.0.1:{exp.http_port}/keda/v1/queues/email")
        assert status == 200
        data = json.loads(body)
        assert {k: data[k] for k in EMAIL_EXPECTED} == EMAIL_EXPECTED
        assert data["backend"] == "arq"
        status, body = await get(f"http://127.0.0.1:{exp.http_port}/keda/v1/queues/nope")
        assert status == 404
        assert "known queues: email, image_processing, held, idle" in json.loads(body)["error"]


async def test_probes(redis_url: str) -> None:
    async with running_exporter(redis_url) as exp:
        for url, ssl in [
            (f"http://127.0.0.1:{exp.http_port}/livez", None),
            (f"http://127.0.0.1:{exp.http_port}/readyz", None),
            (f"https://127.0.0.1:{exp.api_port}/healthz", False),
            (f"https://127.0.0.1:{exp.api_port}/readyz", False),
        ]:
            status, _ = await get(url, ssl=ssl)
            assert status == 200, url


async def test_requests_are_served_from_the_cache(redis: Redis, redis_url: str) -> None:
    """Many requests within one interval cost no Redis command; counts are never older than the interval."""
    await seed_every_state(redis)
    async with running_exporter(redis_url, refresh_seconds=0.5) as exp:
        await asyncio.sleep(0.1)
        before = (await redis.info("stats"))["total_commands_processed"]
        refreshes = exp.cache.health.refreshes
        for _ in range(50):
            status, _ = await get(f"http://127.0.0.1:{exp.http_port}/keda/v1/queues/email")
            assert status == 200
        ran = exp.cache.health.refreshes - refreshes
        after = (await redis.info("stats"))["total_commands_processed"]
        # The loop may have refreshed once or twice meanwhile (a pipeline of up to two scripts plus the
        # INFO call itself); fifty uncached requests would have cost fifty scripts or more.
        assert after - before <= 3 * ran + 2, (after - before, ran)
        # A job added now shows within one interval, not later.
        await redis.zadd("arq:queue:idle", {"new": round(time.time() * 1000) - 10})
        deadline = time.monotonic() + 0.5 + 0.3
        while True:
            _, body = await get(f"http://127.0.0.1:{exp.http_port}/keda/v1/queues/idle")
            if json.loads(body)["waiting"] == 1:
                break
            assert time.monotonic() < deadline, "a new job was not counted within the refresh interval"
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("queues", [0, 300])
async def test_one_round_trip_per_refresh_whatever_the_size(redis: Redis, redis_url: str, queues: int) -> None:
    """A refresh sends one pipeline however many queues and jobs: MONITOR sees only the scripts."""
    specs = {
        **SPECS,
        **{f"q{i}": QueueSpec(name=f"q{i}", functions=["t.m.f"]) for i in range(queues)},
        "node": QueueSpec(name="node", backend="bullmq"),
    }
    pipe = redis.pipeline(transaction=False)
    for i in range(20_000):
        pipe.zadd("arq:queue:email", {f"j{i}": i})
    await pipe.execute()
    reader = CountsReader(redis)
    await reader.read(specs)  # loads the scripts
    watcher = Redis.from_url(redis_url)
    sent: list[str] = []
    async with watcher.monitor() as monitor:
        await reader.read(specs)
        await redis.echo("end-of-refresh")
        while True:
            entry = await monitor.next_command()
            if entry["command"] == "ECHO end-of-refresh":
                break
            if entry["client_type"] != "lua":  # commands run inside a script are not round trips
                sent.append(entry["command"].split()[0].upper())
    await watcher.aclose()
    assert sent == ["EVALSHA", "EVALSHA"]  # the arq script and the BullMQ script, in one pipeline


async def test_concurrent_readers_share_one_refresh(redis: Redis) -> None:
    """Single flight: twenty readers of a stale cache cause one Redis read, not twenty."""
    cache = SnapshotCache(redis, SPECS, refresh_seconds=0.3)  # no loop: every refresh is on demand
    snaps = await asyncio.gather(*(cache.get() for _ in range(20)))
    assert cache.health.refreshes == 1
    assert all(s is snaps[0] for s in snaps)
    assert await cache.get() is snaps[0]  # fresh: served without Redis
    await asyncio.sleep(0.35)
    assert await cache.get() is not snaps[0]  # older than the interval: read again
    assert cache.health.refreshes == 2


async def test_stalled_redis_is_reported_not_waited_for(tmp_path: Path) -> None:
    """A Redis that stops answering (here CLIENT PAUSE) ends each refresh at its timeout: 503, then recovery."""
    server = RedisServer(tmp_path / "redis").start()
    admin = Redis.from_url(server.url)
    try:
        async with running_exporter(server.url, refresh_seconds=0.2) as exp:
            exp.cache.timeout_seconds = 0.3
            url = f"https://127.0.0.1:{exp.api_port}{BASE}/namespaces/default/bullmq_queue_waiting"
            status, _ = await get(url, params={"labelSelector": "queue=email"}, ssl=False)
            assert status == 200
            await admin.execute_command("CLIENT", "PAUSE", "2000", "ALL")
            await asyncio.sleep(0.9)  # a couple of refreshes time out meanwhile
            started = time.monotonic()
            status, body = await get(url, params={"labelSelector": "queue=email"}, ssl=False)
            assert time.monotonic() - started < 0.25  # answered at once, not after Redis
            assert status == 503 and "TimeoutError" in json.loads(body)["message"]
            assert exp.cache.health.errors >= 1
            await asyncio.sleep(1.6)  # the pause ends; the loop recovers by itself
            status, body = await get(url, params={"labelSelector": "queue=email"}, ssl=False)
            assert status == 200, body
            assert exp.cache.health.redis_up
    finally:
        await admin.aclose()
        server.kill()


async def test_long_queue_lists_are_cut_short_in_errors(redis_url: str) -> None:
    specs = {f"q{i:02d}": QueueSpec(name=f"q{i:02d}", functions=["t.m.f"]) for i in range(30)}
    async with running_exporter(redis_url, specs) as exp:
        url = f"https://127.0.0.1:{exp.api_port}{BASE}/namespaces/default/bullmq_queue_waiting"
        status, body = await get(url, params={"labelSelector": "queue=nope"}, ssl=False)
        assert status == 404
        message = json.loads(body)["message"]
        assert "known queues: q00, q01," in message and "q19 and 10 more" in message and "q20" not in message
        status, body = await get(f"http://127.0.0.1:{exp.http_port}/keda/v1/queues/nope")
        assert status == 404 and "q19 and 10 more" in json.loads(body)["error"]


async def test_large_pages_are_gzipped_once_per_refresh(redis_url: str) -> None:
    specs = {f"q{i:03d}": QueueSpec(name=f"q{i:03d}", functions=["t.m.f"]) for i in range(200)}
    async with (
        running_exporter(redis_url, specs, refresh_seconds=5) as exp,
        aiohttp.ClientSession(auto_decompress=False) as session,
    ):
        url = f"http://127.0.0.1:{exp.http_port}/metrics"
        async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            packed = await resp.read()
        async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
            assert "Content-Encoding" not in resp.headers
            plain = await resp.read()
        assert gzip.decompress(packed) == plain
        assert len(packed) < len(plain) / 5
        body, gzipped = exp.page.current  # compressed with the page at the refresh, served as it is
        assert gzipped is not None and gzip.decompress(gzipped) == body == plain
