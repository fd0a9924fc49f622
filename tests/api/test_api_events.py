"""The event routes through aiohttp's test client, against a real redis-server: JSON pages, Server-Sent Events
that resume exactly after ``Last-Event-ID``, keep-alive comments, the bearer token, bad resume points."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from api_processes import api_env
from arqscale.api import event_routes
from arqscale.api.app import create_app
from arqscale.core.events import is_stream_id
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from redis_server import RedisServer, free_port

SPECS = parse_queues({"queues": {"email": {"functions": ["tests.tasks.send_email"]}}})
TOKEN = "events-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SSE = {**AUTH, "Accept": "text/event-stream"}


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SPECS, redis, max_body_bytes=4096, token=TOKEN)
    test_client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def enqueue(redis: Redis, *ids: str) -> None:
    producer = Producer(redis, SPECS)
    for job_id in ids:
        # Deferred: no worker here, so each job's only event is its `delayed`.
        await producer.enqueue("email", "send_email", job_id=job_id, defer_seconds=600)


async def read_sse(resp: Any, count: int) -> list[dict[str, str]]:
    """The next ``count`` SSE events (comments skipped), each as its fields."""
    out: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    while len(out) < count:
        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if not line:
            if fields:
                out.append(fields)
                fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    return out


async def test_a_queue_page_and_a_job_page(client: TestClient[Any, Any], redis: Redis) -> None:
    await enqueue(redis, "a", "b", "c")
    resp = await client.get("/v1/queues/email/events", headers=AUTH)
    assert resp.status == 200
    page = await resp.json()
    assert [(e["event"], e["job"]) for e in page["events"]] == [("delayed", "a"), ("delayed", "b"), ("delayed", "c")]
    assert page["events"][0]["func"] == "send_email" and page["events"][0]["delay_ms"] == 600_000
    assert page["last_id"] == page["events"][-1]["id"] and page["gap"] is False
    params = {"after": page["events"][0]["id"], "limit": 1}
    resp = await client.get("/v1/queues/email/events", params=params, headers=AUTH)
    assert [e["job"] for e in (await resp.json())["events"]] == ["b"]
    resp = await client.get("/v1/jobs/c/events", headers=AUTH)
    assert [e["job"] for e in (await resp.json())["events"]] == ["c"]


async def test_sse_resumes_exactly_after_last_event_id(client: TestClient[Any, Any], redis: Redis) -> None:
    await enqueue(redis, "j0")
    first = await client.get("/v1/queues/email/events", params={"after": "0-0"}, headers=SSE)
    assert first.status == 200 and first.headers["Content-Type"].startswith("text/event-stream")
    [seen] = await read_sse(first, 1)
    assert (seen["event"], json.loads(seen["data"])["job"]) == ("delayed", "j0")
    await enqueue(redis, "j1")
    [live] = await read_sse(first, 1)
    assert json.loads(live["data"])["job"] == "j1"
    first.close()  # the client leaves; these happen while it is away
    await enqueue(redis, "j2", "j3", "j4")
    again = await client.get("/v1/queues/email/events", headers={**SSE, "Last-Event-ID": live["id"]})
    missed = await read_sse(again, 3)
    assert [json.loads(e["data"])["job"] for e in missed] == ["j2", "j3", "j4"]
    assert all(e["id"] == json.loads(e["data"])["id"] for e in missed)
    await enqueue(redis, "j5")
    [after] = await read_sse(again, 1)
    assert json.loads(after["data"])["job"] == "j5"
    again.close()


async def test_a_jobs_stream_has_only_its_events(client: TestClient[Any, Any], redis: Redis) -> None:
    await enqueue(redis, "x", "y")
    resp = await client.get("/v1/jobs/y/events", headers=SSE)
    await Producer(redis, SPECS).cancel("y")
    events = await read_sse(resp, 2)
    assert [(e["event"], json.loads(e["data"])["job"]) for e in events] == [("delayed", "y"), ("cancelled", "y")]
    resp.close()


async def test_an_idle_stream_gets_keep_alive_comments(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_routes, "KEEPALIVE_SECONDS", 0.1)
    resp = await client.get("/v1/queues/email/events", headers=SSE)
    lines = [await asyncio.wait_for(resp.content.readline(), 10) for _ in range(4)]
    assert b": keep-alive\n" in lines
    resp.close()


async def test_events_need_the_token_and_a_known_queue_or_job(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/v1/queues/email/events", headers={"Accept": "text/event-stream"})).status == 401
    assert (await client.get("/v1/queues/nope/events", headers=AUTH)).status == 404
    assert (await client.get("/v1/jobs/nope/events", headers=AUTH)).status == 404
    resp = await client.get("/v1/jobs/nope/events", params={"queue": "email"}, headers=AUTH)
    assert (await resp.json())["events"] == []


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=30))
async def test_a_resume_point_that_is_not_a_stream_id_is_a_422(client: TestClient[Any, Any], text: str) -> None:
    if is_stream_id(text):
        return
    resp = await client.get("/v1/queues/email/events", params={"after": text}, headers=AUTH)
    assert resp.status == 422, text
    if text.isprintable() and text.isascii() and "\n" not in text:
        resp = await client.get("/v1/queues/email/events", headers={**AUTH, "Last-Event-ID": text})
        assert resp.status == 422, text


async def test_a_stopping_api_ends_its_open_streams(redis_server: RedisServer, tmp_path: Path) -> None:
    # aiohttp waits for running handlers on shutdown (60 s by default); a stream never ends on its own.
    port = free_port()
    log = tmp_path / "api.log"
    env = api_env(redis_server.url, ARQSCALE_LOG_LEVEL="INFO")
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited on)
            [sys.executable, "-m", "arqscale", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/livez") as live:
                        if live.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            async with http.get(
                f"http://127.0.0.1:{port}/v1/queues/email/events", headers={"Accept": "text/event-stream"}
            ) as stream:
                assert (await asyncio.wait_for(stream.content.readline(), 10)).startswith(b":")
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(proc.wait, 20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
