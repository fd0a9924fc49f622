"""The dead store of webhooks through the API and the CLI, and callback URLs at enqueue."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from arqscale.api.app import create_app
from arqscale.core.keys import callback_key
from arqscale.core.spec import parse_queues
from arqscale.core.webhook_store import Delivery, WebhookStore

QUEUES = {
    "q": {
        "functions": ["tests.tasks.send_email"],
        "webhooks": {
            "endpoints": {"main": {"url": "https://hooks.example.com/in", "secret_env": "HOOK_SECRET"}},
            "callbacks": {"secret_env": "HOOK_SECRET"},
        },
    },
    "plain": {"functions": ["tests.tasks.send_email"]},
}
SPECS = parse_queues({"queues": QUEUES})


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SPECS, redis, max_body_bytes=65536)
    c: TestClient[Any, Any] = TestClient(TestServer(app))
    await c.start_server()
    yield c
    await c.close()


async def bury(redis: Redis, n: int) -> list[str]:
    """``n`` deliveries through the store's own failure path (one attempt allowed: dead at once)."""
    store = WebhookStore(redis, SPECS["q"])
    ids = []
    for i in range(n):
        d = Delivery(
            id=f"q:{1000 + i}-0:main", queue="q", endpoint="main", event="completed", job_id=f"j{i}",
            body='{"type":"job.completed"}', created_at=time.time(),
        )  # fmt: skip
        await store.ingest([], [d])
        [taken] = await store.take(1, 10_000)
        assert await store.failed(taken, "HTTP 500 from hooks.example.com", None, time.time()) == 2
        ids.append(d.id)
    return ids


async def test_dead_webhooks_listed_read_retried_and_purged(client: TestClient[Any, Any], redis: Redis) -> None:
    ids = await bury(redis, 3)
    listing = await (await client.get("/v1/queues/q/webhooks/dead", params={"limit": "2"})).json()
    assert listing["total"] == 3 and len(listing["items"]) == 2
    assert listing["items"][0]["id"] == ids[-1]  # newest first
    one = await client.get(f"/v1/queues/q/webhooks/dead/{ids[0]}")
    assert one.status == 200 and (await one.json())["last_error"] == "HTTP 500 from hooks.example.com"
    assert (await client.get("/v1/queues/q/webhooks/dead/nope")).status == 404
    retried = await client.post(f"/v1/queues/q/webhooks/dead/{ids[0]}/retry")
    assert retried.status == 202 and (await retried.json())["retried"] == [ids[0]]
    assert await WebhookStore(redis, SPECS["q"]).pending_count() == 1
    assert (await client.post("/v1/queues/q/webhooks/dead/nope/retry")).status == 404
    bare = await client.delete("/v1/queues/q/webhooks/dead")
    assert bare.status == 422  # all=true is required
    assert (await (await client.delete(f"/v1/queues/q/webhooks/dead/{ids[1]}")).json())["deleted"] == 1
    assert (await client.delete(f"/v1/queues/q/webhooks/dead/{ids[1]}")).status == 404
    assert (await (await client.delete("/v1/queues/q/webhooks/dead", params={"all": "true"})).json())["deleted"] == 1
    everything = await client.post("/v1/queues/q/webhooks/dead/retry")
    assert everything.status == 202 and (await everything.json())["retried"] == []
    assert (await client.get("/v1/queues/nope/webhooks/dead")).status == 404


async def test_enqueue_with_a_callback_url(client: TestClient[Any, Any], redis: Redis) -> None:
    body = {"function": "send_email", "job_id": "cb", "callback_url": "https://example.com/done?k=1"}
    assert (await client.post("/v1/queues/q/jobs", json=body)).status == 202
    assert await redis.get(callback_key("cb")) == b"https://example.com/done?k=1"
    refused = await client.post("/v1/queues/plain/jobs", json={**body, "job_id": "cb2"})
    assert refused.status == 422 and (await refused.json())["details"][0]["field"] == "callback_url"
    for bad in ("file:///etc/passwd", "https://u:p@example.com/", "not a url"):
        answer = await client.post("/v1/queues/q/jobs", json={**body, "callback_url": bad})
        assert answer.status == 422, bad


async def test_cli(redis: Redis, redis_env: dict[str, str], tmp_path: Path) -> None:
    ids = await bury(redis, 2)
    qfile = tmp_path / "queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": QUEUES}))
    env = {**redis_env, "ARQSCALE_QUEUES_FILE": str(qfile)}

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "arqscale", "webhooks", "dead", *args]
        return await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True)

    listed = await cli("list", "q")
    assert listed.returncode == 0 and "2 undeliverable webhook(s) on q" in listed.stdout and ids[0] in listed.stdout
    assert (await cli("retry", "q")).returncode == 2  # ids or --all
    retried = await cli("retry", "q", ids[0], "q:0-0:main")
    assert retried.returncode == 1 and "not in the dead store: q:0-0:main" in retried.stdout
    assert "1 undeliverable webhook(s) deleted" in (await cli("purge", "q", "--all")).stdout
    enqueued = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "arqscale",
            "enqueue",
            "q",
            "send_email",
            "--job-id",
            "c1",
            "--callback-url",
            "ftp://x/",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert enqueued.returncode == 2 and "--callback-url" in enqueued.stderr
