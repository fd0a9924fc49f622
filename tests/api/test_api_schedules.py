"""Schedules over HTTP, with a real ``arqscale worker`` firing them: create, change, pause, resume, remove, and
the errors each route answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from arqscale.api.app import create_app
from arqscale.core.spec import parse_queues
from worker_processes import StartWorker, stop_all, wait_until, worker_starter

QUEUES = {
    "q": {
        "functions": ["worker_tasks.record"],
        "lease_seconds": 1,
        "poll_interval": 0.1,
        "schedules": {"nightly": {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "function": "record"}},
    }
}
SPECS = parse_queues({"queues": QUEUES})


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[TestClient[Any, Any]]:
    c: TestClient[Any, Any] = TestClient(TestServer(create_app(SPECS, redis, max_body_bytes=4096)))
    await c.start_server()
    yield c
    await c.close()


async def body(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_runtime_schedules_over_http_are_fired_by_the_worker(
    client: TestClient[Any, Any], redis: Redis, workers: StartWorker
) -> None:
    await workers(QUEUES).ready()
    url = "/v1/queues/q/schedules"

    async def listed() -> list[dict[str, Any]]:
        return list((await body(await client.get(url), 200))["schedules"])

    # the worker wrote the declared schedule at start-up
    [nightly] = await wait_until(listed, 10, "the declared schedule synced")
    assert nightly["name"] == "nightly" and nightly["origin"] == "spec" and nightly["next_run_at"] > time.time()
    assert nightly["schedule"]["cron"] == "0 3 * * *" and nightly["last_job"] is None

    created = await body(await client.put(f"{url}/tick", json={"every": 0.5, "function": "record", "args": [1]}), 201)
    assert created["origin"] == "api" and created["paused"] is False and created["next_run_at"] is not None

    async def last_job() -> dict[str, Any] | None:
        view = await body(await client.get(f"{url}/tick"), 200)
        return view["last_job"]  # type: ignore[no-any-return]

    first = await wait_until(last_job, 15, "the worker firing the new schedule")
    assert first["job_id"].startswith("sched:q:tick:")

    async def job_done(job_id: str) -> bool:
        return (await (await client.get(f"/v1/jobs/{job_id}")).json())["state"] == "completed"

    await wait_until(lambda: job_done(first["job_id"]), 10, "the scheduled job completed")  # an ordinary job

    replaced = await body(await client.put(f"{url}/tick", json={"every": 0.5, "function": "record", "args": [2]}), 200)
    assert replaced["schedule"]["args"] == [2]

    paused = await body(await client.post(f"{url}/tick/pause"), 200)
    assert paused == {"queue": "q", "name": "tick", "changed": True}
    assert (await body(await client.post(f"{url}/tick/pause"), 200))["changed"] is False
    held = await last_job()
    await asyncio.sleep(1.5)  # three ticks' time
    view = await body(await client.get(f"{url}/tick"), 200)
    assert view["paused"] is True and view["next_run_at"] is None and view["last_job"] == held

    assert (await body(await client.post(f"{url}/tick/resume"), 200))["changed"] is True

    async def fired_again() -> bool:
        job = await last_job()
        return job is not None and held is not None and job["tick_at"] > held["tick_at"]

    await wait_until(fired_again, 10, "ticks again after resume")

    assert (await body(await client.delete(f"{url}/tick"), 200))["changed"] is True
    await body(await client.get(f"{url}/tick"), 404)
    assert [s["name"] for s in await listed()] == ["nightly"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "code"),
    [
        ("PUT", "/v1/queues/q/schedules/nightly", {"every": 5, "function": "record"}, 409, "declared_schedule"),
        ("DELETE", "/v1/queues/q/schedules/nightly", None, 409, "declared_schedule"),
        ("PUT", "/v1/queues/q/schedules/x", {"every": 5, "function": "nope"}, 422, "unknown_function"),
        ("PUT", "/v1/queues/q/schedules/x", {"cron": "61 * * * *", "function": "record"}, 422, "validation_error"),
        ("PUT", "/v1/queues/q/schedules/x", {"every": 5, "function": "record", "priority": 5}, 422, "validation_error"),
        ("PUT", "/v1/queues/q/schedules/x", {"function": "record"}, 422, "validation_error"),
        ("PUT", "/v1/queues/q/schedules/bad%20name", {"every": 5, "function": "record"}, 422, "validation_error"),
        ("PUT", "/v1/queues/nope/schedules/x", {"every": 5, "function": "record"}, 404, "unknown_queue"),
        ("GET", "/v1/queues/q/schedules/x", None, 404, "not_found"),
        ("DELETE", "/v1/queues/q/schedules/x", None, 404, "not_found"),
        ("POST", "/v1/queues/q/schedules/x/pause", None, 404, "not_found"),
        ("POST", "/v1/queues/q/schedules/x/resume", None, 404, "not_found"),
    ],
)
async def test_schedule_errors(
    client: TestClient[Any, Any], method: str, path: str, payload: Any, status: int, code: str
) -> None:
    resp = await client.request(method, path, json=payload)
    answer = await body(resp, status)
    assert answer["error"] == code, answer


async def test_a_stored_definition_that_does_not_validate_is_listed_with_its_problem(
    client: TestClient[Any, Any], redis: Redis
) -> None:
    await redis.hset("arqscale:q:schedules", "odd", b'{"origin": "api", "schedule": {"every": "\xff"}}')
    [view] = (await body(await client.get("/v1/queues/q/schedules"), 200))["schedules"]
    assert view["name"] == "odd" and view["schedule"] is None and "unusable" in view["problem"]
