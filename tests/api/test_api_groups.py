"""Per-key limits through the HTTP API: a job's group at enqueue, the held count, the per-key page."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from arqscale.api.app import create_app
from arqscale.core.spec import parse_queues

SPECS = parse_queues(
    {
        "queues": {
            "limited": {"functions": ["tests.tasks.send_email"], "group": {"concurrency": 1}},
            "plain": {"functions": ["tests.tasks.send_email"]},
        }
    }
)


async def test_groups_are_given_at_enqueue_counted_and_listed_a_page_at_a_time(redis: Redis) -> None:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(SPECS, redis, max_body_bytes=1 << 20)))
    await client.start_server()
    try:
        body = {"jobs": [{"function": "send_email", "group": g} for g in ("a", "a", "a", "b", "b", "c")]}
        resp = await client.post("/v1/queues/limited/jobs:batch", json=body)
        assert resp.status == 202
        job_ids = [j["job_id"] for j in (await resp.json())["jobs"]]
        # The third job of key a is held at enqueue: its status says queued and held, with its key, not 404.
        held = await client.get(f"/v1/jobs/{job_ids[2]}")
        assert held.status == 200
        shown = await held.json()
        assert (shown["state"], shown["held"], shown["group"], shown["queue"]) == ("queued", True, "a", "limited")
        first = await (await client.get(f"/v1/jobs/{job_ids[0]}")).json()
        assert (first["state"], first["held"], first["group"]) == ("queued", False, "a")
        waiting = await (await client.get("/v1/queues/limited/jobs?state=waiting")).json()
        assert (waiting["total"], waiting["held"]) == (3, 3)
        assert (await (await client.get("/v1/queues/plain/jobs?state=waiting")).json())["held"] is None
        schemas = (await (await client.get("/openapi.json")).json())["components"]["schemas"]
        assert {"held", "group"} <= set(schemas["JobStatus"]["properties"])
        assert "held" in schemas["JobList"]["properties"]
        queue = await (await client.get("/v1/queues/limited")).json()
        # One job per key may take the key's single slot; the other three are held, not waiting.
        assert (queue["waiting"], queue["held"]) == (3, 3)
        first = await (await client.get("/v1/queues/limited/groups?limit=1")).json()
        assert first == {"queue": "limited", "groups": [{"key": "a", "running": 0, "waiting": 2}], "next_after": "a"}
        second = await (await client.get("/v1/queues/limited/groups?limit=1&after=a")).json()
        assert second["groups"] == [{"key": "b", "running": 0, "waiting": 1}]
        last = await (await client.get("/v1/queues/limited/groups?after=b")).json()
        assert last == {"queue": "limited", "groups": [], "next_after": None}
        resp = await client.post("/v1/queues/plain/jobs", json={"function": "send_email", "group": "a"})
        assert resp.status == 422
        assert (await resp.json())["details"][0]["field"] == "group"
        assert (await client.get("/v1/queues/limited/groups?limit=0")).status == 422
        # Found by id, a held job can be cancelled: it leaves its key's set and never runs.
        cancelled = await client.post(f"/v1/jobs/{job_ids[2]}/cancel")
        assert cancelled.status == 202, await cancelled.text()
        assert (await (await client.get(f"/v1/jobs/{job_ids[2]}")).json())["state"] == "cancelled"
        assert (await (await client.get("/v1/queues/limited")).json())["held"] == 2
    finally:
        await client.close()
