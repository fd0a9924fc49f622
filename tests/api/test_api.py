"""The HTTP API through aiohttp's test client, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from redis.asyncio import Redis
from yarl import URL

from arqscale.api.app import create_app
from arqscale.api.openapi import OPERATIONS
from arqscale.core.spec import parse_queues
from protocol_steps import bury, finish, pick_up
from redis_server import free_port

SPECS = parse_queues(
    {
        "queues": {
            "email": {"functions": ["tests.tasks.send_email", "tests.tasks.send_digest"]},
            "verification": {"functions": ["tests.tasks.verify_document"], "max_tries": 2},
        }
    }
)
LIMIT = 4096

ClientFactory = Callable[..., Any]


@pytest.fixture
async def make_client(redis: Redis) -> AsyncIterator[ClientFactory]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        token: str | None = None, redis_client: Redis | None = None, limit: int = LIMIT
    ) -> TestClient[Any, Any]:
        app = create_app(SPECS, redis_client or redis, max_body_bytes=limit, token=token)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await make_client()
    return result


async def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["error"] == code, body
    assert body["message"]
    return body


async def test_enqueue_answers_202_and_is_idempotent(client: TestClient[Any, Any], redis: Redis) -> None:
    body = {"function": "send_email", "args": ["a@example.com"], "kwargs": {"template": "welcome"}, "job_id": "w-1"}
    resp = await client.post("/v1/queues/email/jobs", json=body)
    assert resp.status == 202
    assert await resp.json() == {"job_id": "w-1", "queue": "email", "status": "queued", "created": True}
    again = await client.post("/v1/queues/email/jobs", json=body)
    assert again.status == 202 and (await again.json())["created"] is False
    assert await redis.zcard("arq:queue:email") == 1
    # Once it runs, a repeated enqueue reports the real job's state.
    await pick_up(redis, SPECS["email"], "w-1")
    running = await (await client.post("/v1/queues/email/jobs", json=body)).json()
    assert (running["status"], running["created"]) == ("active", False)

    status = await client.get("/v1/jobs/w-1")
    assert status.status == 200
    data = await status.json()
    assert (data["state"], data["queue"], data["function"], data["priority"]) == ("active", "email", "send_email", 1)


async def test_enqueue_generates_ids_and_defers(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/queues/email/jobs", json={"function": "send_email", "defer_seconds": 60})
    data = await resp.json()
    assert resp.status == 202 and data["status"] == "deferred" and len(data["job_id"]) == 32
    assert (await (await client.get(f"/v1/jobs/{data['job_id']}")).json())["state"] == "deferred"


async def test_batch_enqueue_validates_all_before_writing(client: TestClient[Any, Any], redis: Redis) -> None:
    jobs = [{"function": "send_email", "job_id": f"b{i}"} for i in range(3)]
    resp = await client.post("/v1/queues/email/jobs:batch", json={"jobs": jobs})
    assert resp.status == 202
    assert [j["job_id"] for j in (await resp.json())["jobs"]] == ["b0", "b1", "b2"]

    bad = [{"function": "send_email", "job_id": "c0"}, {"function": "send_email", "priority": 7}]
    body = await _error(await client.post("/v1/queues/email/jobs:batch", json={"jobs": bad}), 422, "validation_error")
    assert body["details"][0]["field"] == "jobs.1.priority"
    assert "0 (most urgent) to 2" in body["message"]
    assert await redis.zscore("arq:queue:email", "c0") is None  # nothing written

    body = await _error(await client.post("/v1/queues/email/jobs:batch", json={"jobs": []}), 422, "validation_error")
    assert body["details"][0]["field"] == "jobs"


async def test_unknown_queue_is_404_naming_known_queues(client: TestClient[Any, Any]) -> None:
    body = await _error(await client.post("/v1/queues/nope/jobs", json={"function": "x"}), 404, "unknown_queue")
    assert "'nope'" in body["message"] and "email, verification" in body["message"]
    await _error(await client.get("/v1/queues/nope"), 404, "unknown_queue")
    await _error(await client.post("/v1/queues/nope/pause"), 404, "unknown_queue")
    await _error(await client.get("/v1/queues/nope/dead-letters"), 404, "unknown_queue")


async def test_unknown_function_is_422(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/queues/email/jobs", json={"function": "verify_document"})
    body = await _error(resp, 422, "unknown_function")
    assert body["details"] == [{"field": "function", "message": "unknown function"}]
    assert "send_digest, send_email" in body["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"args": []}, "function"),
        ({"function": "send_email", "args": "not-a-list"}, "args"),
        ({"function": "send_email", "kwargs": [1]}, "kwargs"),
        ({"function": "send_email", "priority": "high"}, "priority"),
        ({"function": "send_email", "priority": -1}, "priority"),
        ({"function": "send_email", "defer_seconds": -5}, "defer_seconds"),
        ({"function": "send_email", "job_id": "has space"}, "job_id"),
        ({"function": "send_email", "colour": "blue"}, "colour"),
    ],
)
async def test_validation_errors_name_the_field(client: TestClient[Any, Any], payload: Any, field: str) -> None:
    body = await _error(await client.post("/v1/queues/email/jobs", json=payload), 422, "validation_error")
    assert [d["field"] for d in body["details"]] == [field]


async def test_non_object_body_is_422(client: TestClient[Any, Any]) -> None:
    body = await _error(await client.post("/v1/queues/email/jobs", json=[1, 2]), 422, "validation_error")
    assert body["details"][0]["field"] == "(body)"


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"function": "send_email", "defer_seconds": NaN}', b"\xff\xfe", b"[" * 100_000],
)
async def test_invalid_json_is_400(make_client: ClientFactory, raw: bytes) -> None:
    # A bigger limit than the other tests, so the deeply nested body gets parsed rather than refused.
    client = await make_client(limit=10**6)
    resp = await client.post("/v1/queues/email/jobs", data=raw, headers={"Content-Type": "application/json"})
    await _error(resp, 400, "invalid_json")


async def test_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    big = {"function": "send_email", "args": ["x" * (LIMIT + 10)]}
    body = await _error(await client.post("/v1/queues/email/jobs", json=big), 413, "body_too_large")
    assert str(LIMIT) in body["message"]

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"function": "send_email", "args": ["'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"]}'

    # Chunked: no Content-Length to refuse up front; the limit still holds while reading.
    await _error(await client.post("/v1/queues/email/jobs", data=chunks()), 413, "body_too_large")


async def test_job_status_not_found_and_bad_id(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/jobs/never-enqueued")
    assert resp.status == 404
    assert (await resp.json())["state"] == "not_found"
    # Any id plain arq accepts is an id (issue 10): a long one is looked up, not refused.
    resp = await client.get(URL("/v1/jobs/" + "x" * 200 + "%20%2F", encoded=True))
    assert resp.status == 404 and (await resp.json())["job_id"] == "x" * 200 + " /"
    # A segment that is not percent-encoded UTF-8 names no id.
    body = await _error(await client.get(URL("/v1/jobs/%C3", encoded=True)), 422, "validation_error")
    assert body["details"][0]["field"] == "job_id"


async def test_queue_counts_and_pause_resume(client: TestClient[Any, Any], redis: Redis) -> None:
    for i in range(3):
        await client.post("/v1/queues/email/jobs", json={"function": "send_email", "job_id": f"e{i}"})
    await client.post("/v1/queues/email/jobs", json={"function": "send_email", "defer_seconds": 300})
    await pick_up(redis, SPECS["email"], "e0")

    one = await (await client.get("/v1/queues/email")).json()
    assert (one["waiting"], one["active"], one["delayed"], one["backlog"], one["is_paused"]) == (2, 1, 1, 3, False)
    assert one["workers"] == 0
    await redis.zadd("arqscale:email:workers", {"w1": 10**13, "crashed": 1})  # one live heartbeat, one expired
    assert (await (await client.get("/v1/queues/email")).json())["workers"] == 1

    paused = await client.post("/v1/queues/email/pause")
    assert await paused.json() == {"queue": "email", "paused": True, "changed": True}
    assert (await (await client.post("/v1/queues/email/pause")).json())["changed"] is False
    listed = await (await client.get("/v1/queues")).json()
    by_name = {q["queue"]: q for q in listed["queues"]}
    assert set(by_name) == {"email", "verification"}
    assert (by_name["email"]["waiting"], by_name["email"]["paused"], by_name["email"]["is_paused"]) == (0, 2, True)

    resumed = await client.post("/v1/queues/email/resume")
    assert await resumed.json() == {"queue": "email", "paused": False, "changed": True}
    assert not await redis.exists("arqscale:email:paused")


async def test_dead_letter_endpoints(client: TestClient[Any, Any], redis: Redis) -> None:
    spec = SPECS["verification"]
    for i in range(3):
        await client.post("/v1/queues/verification/jobs", json={"function": "verify_document", "job_id": f"d{i}"})
        await pick_up(redis, spec, f"d{i}")
        await bury(redis, spec, f"d{i}", error=f"ProviderError: document d{i} rejected")

    listing = await (await client.get("/v1/queues/verification/dead-letters?limit=2")).json()
    assert listing["total"] == 3 and len(listing["items"]) == 2 and listing["limit"] == 2
    await _error(await client.get("/v1/queues/verification/dead-letters?limit=0"), 422, "validation_error")
    await _error(await client.get("/v1/queues/verification/dead-letters?offset=x"), 422, "validation_error")
    await _error(await client.get("/v1/queues/verification/dead-letters?limit=²"), 422, "validation_error")

    shown = await client.get("/v1/queues/verification/dead-letters/d1")
    assert shown.status == 200 and (await shown.json())["error"] == "ProviderError: document d1 rejected"
    await _error(await client.get("/v1/queues/verification/dead-letters/zz"), 404, "not_found")

    requeued = await client.post("/v1/queues/verification/dead-letters/d1/requeue")
    assert requeued.status == 202
    assert await requeued.json() == {"queue": "verification", "job_id": "d1", "status": "queued"}
    assert (await (await client.get("/v1/jobs/d1")).json())["state"] == "queued"
    await _error(await client.post("/v1/queues/verification/dead-letters/d1/requeue"), 404, "not_found")

    # d0 dies again while its id is live elsewhere: requeue would run it twice.
    await client.post("/v1/queues/verification/jobs", json={"function": "verify_document", "job_id": "d0"})
    await _error(await client.post("/v1/queues/verification/dead-letters/d0/requeue"), 409, "conflict")

    gone = await client.delete("/v1/queues/verification/dead-letters/d2")
    assert await gone.json() == {"queue": "verification", "purged": 1}
    await _error(await client.delete("/v1/queues/verification/dead-letters/d2"), 404, "not_found")
    await _error(
        await client.delete("/v1/queues/verification/dead-letters?older_than_seconds=-1"), 422, "validation_error"
    )
    kept = await (await client.delete("/v1/queues/verification/dead-letters?older_than_seconds=3600")).json()
    assert kept["purged"] == 0
    await _error(await client.delete("/v1/queues/verification/dead-letters"), 422, "validation_error")
    await _error(
        await client.delete("/v1/queues/verification/dead-letters?all=true&older_than_seconds=1"),
        422,
        "validation_error",
    )
    await _error(await client.delete("/v1/queues/verification/dead-letters?all=yes"), 422, "validation_error")
    everything = await (await client.delete("/v1/queues/verification/dead-letters?all=true")).json()
    assert everything["purged"] == 1


async def test_clean_completed_takes_jobs_that_ended_this_second(client: TestClient[Any, Any], redis: Redis) -> None:
    # Finish early in a second of Redis' clock, so "older than 0 s" must count milliseconds, not whole seconds.
    _, micros = await redis.time()
    if micros > 200_000:
        await asyncio.sleep((1_000_000 - micros) / 1e6 + 0.01)
    spec = SPECS["email"]
    await client.post("/v1/queues/email/jobs", json={"function": "send_email", "job_id": "c1"})
    await pick_up(redis, spec, "c1")
    await finish(redis, spec, "c1", success=True, result={"sent": True})
    kept = await (await client.post("/v1/queues/email/clean?state=completed&older_than_seconds=60")).json()
    assert (kept["deleted"], kept["more"]) == (0, False)
    cleaned = await (await client.post("/v1/queues/email/clean?state=completed&older_than_seconds=0")).json()
    assert cleaned == {"queue": "email", "state": "completed", "deleted": 1, "more": False}
    assert not await redis.exists("arq:result:c1")


async def test_requeue_all(client: TestClient[Any, Any], redis: Redis) -> None:
    spec = SPECS["verification"]
    for i in range(2):
        await client.post("/v1/queues/verification/jobs", json={"function": "verify_document", "job_id": f"r{i}"})
        await bury(redis, spec, f"r{i}")
    body = await (await client.post("/v1/queues/verification/dead-letters/requeue")).json()
    assert sorted(body["requeued"]) == ["r0", "r1"] and body["skipped"] == {}


async def test_health_healthy_then_degraded(client: TestClient[Any, Any], redis: Redis) -> None:
    resp = await client.get("/healthz")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "healthy" and body["redis"]["connected"] is True
    await client.post("/v1/queues/email/jobs", json={"function": "send_email"})
    body = await (await client.get("/healthz")).json()
    assert body["status"] == "degraded"
    assert body["problems"] == ["queue email: 1 job(s) waiting and no live worker"]
    # A live worker heartbeat clears it.
    await redis.zadd("arqscale:email:workers", {"w1": 10**13})
    assert (await (await client.get("/healthz")).json())["status"] == "healthy"
    assert (await client.get("/livez")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_redis_down_is_unhealthy_and_503(make_client: ClientFactory) -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        client = await make_client(redis_client=dead)
        resp = await client.get("/healthz")
        body = await resp.json()
        assert resp.status == 503 and body["status"] == "unhealthy" and body["redis"]["connected"] is False
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/livez")).status == 200
        await _error(await client.get("/v1/queues"), 503, "redis_unavailable")
        await _error(
            await client.post("/v1/queues/email/jobs", json={"function": "send_email"}), 503, "redis_unavailable"
        )
    finally:
        await dead.aclose()


async def test_bearer_token(make_client: ClientFactory) -> None:
    client = await make_client(token="s3cret-token")
    resp = await client.get("/v1/queues")
    await _error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    await _error(await client.get("/v1/queues", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    await _error(await client.get("/v1/queues", headers={"Authorization": "Basic s3cret-token"}), 401, "unauthorized")
    # Unauthenticated callers learn nothing about queues, and cannot make the server read big bodies.
    await _error(await client.post("/v1/queues/nope/jobs", data=b"x" * (LIMIT * 2)), 401, "unauthorized")
    auth = {"Authorization": "Bearer s3cret-token"}
    ok = await client.get("/v1/queues", headers=auth)
    assert ok.status == 200
    for path in ("/healthz", "/livez", "/readyz", "/openapi.json"):
        assert (await client.get(path)).status == 200, path
    # Probes go without the token: health then says whether things work, not which queues exist.
    await client.post("/v1/queues/email/jobs", json={"function": "send_email"}, headers=auth)
    anonymous = await (await client.get("/healthz")).json()
    assert anonymous["status"] == "degraded" and anonymous["queues"] == []
    assert "email" not in json.dumps(anonymous)
    full = await (await client.get("/healthz", headers=auth)).json()
    assert [q["queue"] for q in full["queues"]] == ["email", "verification"] and "email" in full["problems"][0]
    body = await (await client.get("/v1/queues")).text()
    assert "s3cret-token" not in body


async def test_unknown_route_and_method_are_json(client: TestClient[Any, Any]) -> None:
    await _error(await client.get("/v2/nothing"), 404, "not_found")
    resp = await client.delete("/v1/queues")
    await _error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"]


async def test_openapi_is_valid_and_describes_every_route(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/openapi.json")).json()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    registered = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    described = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert registered == described
    assert len(described) == len(OPERATIONS)
    enqueue = doc["paths"]["/v1/queues/{queue}/jobs"]["post"]
    assert {"202", "400", "401", "404", "413", "422"} <= set(enqueue["responses"])
    assert doc["components"]["schemas"]["JobRequest"]["required"] == ["function"]


async def test_redis_refusing_writes_is_503_not_500(client: TestClient[Any, Any], redis: Redis) -> None:
    await redis.config_set("maxmemory", "1")
    try:
        resp = await client.post("/v1/queues/email/jobs", json={"function": "send_email"})
        body = await _error(resp, 503, "redis_error")
        assert "OOM" in body["message"] or "OutOfMemoryError" in body["message"]
    finally:
        await redis.config_set("maxmemory", "0")
    assert (await client.post("/v1/queues/email/jobs", json={"function": "send_email"})).status == 202


async def test_list_jobs_by_state(client: TestClient[Any, Any], redis: Redis) -> None:
    email, verification = SPECS["email"], SPECS["verification"]
    for i in range(3):
        await client.post("/v1/queues/email/jobs", json={"function": "send_email", "job_id": f"e{i}"})
    await client.post("/v1/queues/email/jobs", json={"function": "send_email", "job_id": "urgent", "priority": 0})
    await client.post("/v1/queues/email/jobs", json={"function": "send_email", "job_id": "later", "defer_seconds": 60})
    await pick_up(redis, email, "e0")
    await client.post("/v1/queues/verification/jobs", json={"function": "verify_document", "job_id": "v-done"})
    await finish(redis, verification, "v-done", success=True, result={"ok": True})
    await client.post("/v1/queues/verification/jobs", json={"function": "verify_document", "job_id": "v-dead"})
    await bury(redis, verification, "v-dead", error="ProviderError: <b>no</b>")

    async def page(queue: str, query: str) -> dict[str, Any]:
        resp = await client.get(f"/v1/queues/{queue}/jobs{query}")
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    waiting = await page("email", "")  # waiting is the default
    assert (waiting["state"], waiting["total"], waiting["offset"], waiting["limit"]) == ("waiting", 3, 0, 20)
    assert [j["job_id"] for j in waiting["items"]] == ["urgent", "e1", "e2"]
    assert waiting["items"][0]["function"] == "send_email" and waiting["items"][0]["priority"] == 0
    second = await page("email", "?state=waiting&offset=1&limit=1")
    assert second["total"] == 3 and [j["job_id"] for j in second["items"]] == ["e1"]
    active = await page("email", "?state=active")
    assert [j["job_id"] for j in active["items"]] == ["e0"] and active["items"][0]["attempts"] == 1
    delayed = await page("email", "?state=delayed")
    assert [j["job_id"] for j in delayed["items"]] == ["later"] and delayed["items"][0]["scheduled_for"]
    completed = await page("verification", "?state=completed")
    assert [j["job_id"] for j in completed["items"]] == ["v-done"] and completed["items"][0]["finished_at"]
    failed = await page("verification", "?state=failed")
    assert failed["total"] == 1 and failed["items"][0]["error"] == "ProviderError: <b>no</b>"
    # The page and the counts agree.
    counts = await (await client.get("/v1/queues/email")).json()
    assert (counts["waiting"], counts["active"], counts["delayed"]) == (3, 1, 1)
    # A paused queue's ready jobs are still listed as waiting (its counts call them paused).
    await client.post("/v1/queues/email/pause")
    assert (await page("email", "?state=waiting"))["total"] == 3
    await client.post("/v1/queues/email/resume")

    body = await _error(await client.get("/v1/queues/email/jobs?limit=201"), 422, "validation_error")
    assert body["details"] == [{"field": "limit", "message": "expected an integer from 1 to 200"}]
    assert "1 to 200" in body["message"]
    await _error(await client.get("/v1/queues/email/jobs?limit=0"), 422, "validation_error")
    await _error(await client.get("/v1/queues/email/jobs?offset=-1"), 422, "validation_error")
    # A job's own words that are not list states, and the old `complete`, are refused, never read as something else.
    for word in ("dead", "complete", "queued", "deferred"):
        body = await _error(await client.get(f"/v1/queues/email/jobs?state={word}"), 422, "validation_error")
        assert body["details"][0]["field"] == "state"
        assert "waiting, active, delayed, completed, failed" in body["message"]
    await _error(await client.get("/v1/queues/nope/jobs"), 404, "unknown_queue")
    assert (await client.get("/v1/queues/email/jobs?limit=200&offset=1000000000")).status == 200
