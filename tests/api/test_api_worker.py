"""The API and a real ``arqscale worker`` subprocess: what the worker writes, the API reads back."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from arqscale.api.app import create_app
from arqscale.core.spec import demo_queues
from redis_server import free_port

SPECS = demo_queues()


@pytest.fixture
async def workers(redis: Redis, redis_env: dict[str, str], tmp_path: Path) -> AsyncIterator[None]:
    env = redis_env | {
        "ARQSCALE_DEMO_DIR": str(tmp_path),
        "ARQSCALE_DEMO_LATENCY": "0.05",
        "ARQSCALE_DEMO_FLAKINESS": "0",
        "ARQSCALE_WORKER_HOST": "127.0.0.1",
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "arqscale",
            "worker",
            "--queue",
            queue,
            "--port",
            str(free_port()),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for queue in ("email", "verification")
    ]
    yield
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert await asyncio.wait_for(proc.wait(), 60) == 0


async def _until(client: TestClient[Any, Any], job_id: str, states: set[str], within: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        body: dict[str, Any] = await (await client.get(f"/v1/jobs/{job_id}")).json()
        if body["state"] in states or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.1)


async def test_job_runs_and_its_status_shows_result_and_progress(redis: Redis, workers: None) -> None:
    app = create_app(SPECS, redis, max_body_bytes=65536)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(
            "/v1/queues/email/jobs", json={"function": "send_email", "args": ["ada@example.com", "Hi"], "job_id": "m1"}
        )
        assert resp.status == 202
        done = await _until(client, "m1", {"completed", "failed", "dead"})
        assert done["state"] == "completed", done
        assert done["result"]["to"] == "ada@example.com" and done["result"]["delivered_to"].endswith("m1.eml")
        assert done["attempts"] == 1 and done["function"] == "send_email" and done["queue"] == "email"
        assert done["progress"]["percent"] == 100
        assert done["enqueued_at"] <= done["started_at"] <= done["finished_at"]

        await client.post(
            "/v1/queues/verification/jobs",
            json={"function": "verify_document", "args": ["forged-1"], "job_id": "v-forged"},
        )
        dead = await _until(client, "v-forged", {"dead"})
        assert dead["state"] == "dead", dead
        assert dead["attempts"] == SPECS["verification"].max_tries
        assert dead["error"].startswith("DocumentRejected: passport forged-1")

        entry = await (await client.get("/v1/queues/verification/dead-letters/v-forged")).json()
        assert entry["args"] == ["forged-1"] and "Traceback" in entry["traceback"]
        # Requeued, it runs (and dies) again with its tries reset.
        assert (await client.post("/v1/queues/verification/dead-letters/v-forged/requeue")).status == 202
        again = await _until(client, "v-forged", {"dead"})
        assert again["state"] == "dead" and again["attempts"] == SPECS["verification"].max_tries


async def test_lists_show_what_a_real_worker_did(redis: Redis, workers: None) -> None:
    app = create_app(SPECS, redis, max_body_bytes=65536)
    async with TestClient(TestServer(app)) as client:
        jobs = [{"function": "send_email", "args": [f"u{i}@example.com", "Hi"], "job_id": f"l{i}"} for i in range(3)]
        jobs.append(
            {"function": "send_email", "args": ["late@example.com", "Hi"], "job_id": "l-late", "defer_seconds": 600}
        )
        assert (await client.post("/v1/queues/email/jobs:batch", json={"jobs": jobs})).status == 202
        await client.post(
            "/v1/queues/verification/jobs", json={"function": "verify_document", "args": ["forged-2"], "job_id": "v-f2"}
        )
        for job_id in ("l0", "l1", "l2"):
            assert (await _until(client, job_id, {"completed", "failed", "dead"}))["state"] == "completed"
        assert (await _until(client, "v-f2", {"dead"}))["state"] == "dead"

        async def listing(queue: str, state: str) -> dict[str, Any]:
            body: dict[str, Any] = await (await client.get(f"/v1/queues/{queue}/jobs?state={state}")).json()
            return body

        completed = await listing("email", "completed")
        assert completed["total"] == 3 and {j["job_id"] for j in completed["items"]} == {"l0", "l1", "l2"}
        finished = [j["finished_at"] for j in completed["items"]]
        assert finished == sorted(finished, reverse=True)  # newest first
        assert all(j["function"] == "send_email" and j["attempts"] == 1 and j["started_at"] for j in completed["items"])
        delayed = await listing("email", "delayed")
        assert [j["job_id"] for j in delayed["items"]] == ["l-late"]
        assert (await listing("email", "waiting"))["total"] == 0
        assert (await listing("email", "active"))["total"] == 0
        failed = await listing("verification", "failed")
        assert [j["job_id"] for j in failed["items"]] == ["v-f2"]
        assert failed["items"][0]["error"].startswith("DocumentRejected: passport forged-2")
        assert failed["items"][0]["attempts"] == SPECS["verification"].max_tries
