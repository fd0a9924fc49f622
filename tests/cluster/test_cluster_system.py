"""arqscale on a real Redis Cluster (issue 13), with real processes: one ``arqscale worker`` per queue, the
API and the exporter, all given ``REDIS_CLUSTER_NODES`` only; the Python ``Producer`` in the test process.

The queues' names are chosen so that their hash tags (``arqscale:{<queue>}:...``) land on three
different primaries: every shard serves a queue, and the checks read each queue's keys from the node
the harness (not arqscale) says serves its slot. The failover under load is in test_cluster_failover.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from api_processes import api_process
from arqscale.core.connection import create_redis
from arqscale.core.producer import Producer
from arqscale.core.settings import RedisSettings
from arqscale.core.spec import parse_queues
from cluster_servers import RedisClusterSetup
from cluster_stack import (
    ExporterProcess,
    cli,
    exporter_process,
    get_insecure,
    job,
    process_env,
    queue_spec,
    runs_per_job,
    ticks,
    wait_for_states,
    wait_ready,
)
from cluster_tasks import POISON, hold_key
from exporter_support import parse_exposition
from worker_processes import WorkerProcess, stop_all


@dataclass
class Stack:
    setup: RedisClusterSetup
    queues: list[str]  # one per primary, each with its own worker
    counted: str  # a queue whose counts the exporter test sets exactly (its worker runs 2 jobs at a time)
    specs: dict[str, Any]
    env: dict[str, str]
    api: str
    exporter: ExporterProcess
    workers: list[WorkerProcess]
    workdir: Path


@pytest.fixture(scope="module")
def stack(cluster_setup: RedisClusterSetup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("cluster-stack")
    cluster_setup.wait_until_ok(30)
    cluster_setup.flushall()
    names = cluster_setup.names_on_distinct_primaries(4, prefix="c")
    queues, counted = names[:3], names[3]
    specs = {name: queue_spec() for name in queues}
    specs[queues[0]]["schedules"] = {"beat": {"every": 1, "function": "tick", "args": ["declared"]}}
    specs[counted] = queue_spec(concurrency=2, max_tries=1)
    env = process_env(cluster_setup, specs, workdir)
    workers = [WorkerProcess(env, name, workdir / f"worker-{name}.log") for name in [*queues, counted]]
    try:
        for worker in workers:
            wait_ready(worker)
        with (
            api_process(env | {"ARQSCALE_LOG_LEVEL": "WARNING"}, workdir / "api.log") as api,
            exporter_process(env, workdir / "exporter.log") as exporter,
        ):
            yield Stack(cluster_setup, queues, counted, specs, env, api, exporter, workers, workdir)
        for worker in workers:  # none died along the way
            assert worker.proc.poll() is None, worker.output()[-3000:]
        assert "unexpected error" not in (workdir / "api.log").read_text()
    finally:
        stop_all(workers)


def enqueue(stack: Stack, queue: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{stack.api}/v1/queues/{queue}/jobs", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_the_queues_sit_on_three_different_primaries(stack: Stack) -> None:
    owners = {stack.setup.primary_for_key(f"arqscale:{{{q}}}:queue").port for q in stack.queues}
    assert len(owners) == 3


async def test_jobs_on_every_shard_complete_exactly_once(stack: Stack) -> None:
    """Python ``Producer`` and the API both enqueue on the three queues; each job runs once and completes,
    and its result lives on its queue's primary under the queue's hash tag."""
    redis = create_redis(RedisSettings(cluster_nodes=stack.setup.seeds))
    producer = Producer(redis, parse_queues({"queues": stack.specs}))
    expected: dict[str, tuple[str, int]] = {}  # job id -> (queue, result)
    try:
        for queue in stack.queues:
            for n in range(20):
                job_id = f"py-{queue}-{n}"
                await producer.enqueue(queue, "work", n, job_id=job_id)
                expected[job_id] = (queue, n * 2)
    finally:
        await redis.aclose()
    for queue in stack.queues:
        for n in range(20):
            job_id = f"http-{queue}-{n}"
            assert enqueue(stack, queue, {"function": "work", "args": [n + 100], "job_id": job_id})["created"]
            expected[job_id] = (queue, (n + 100) * 2)
    # The same id again is the same job (idempotent enqueue holds in cluster mode too).
    again = enqueue(stack, stack.queues[0], {"function": "work", "args": [0], "job_id": f"http-{stack.queues[0]}-0"})
    assert again["created"] is False
    views = wait_for_states(stack.api, list(expected), {"completed", "dead"}, within=60)
    assert {j: v["state"] for j, v in views.items()} == dict.fromkeys(expected, "completed")
    assert {j: v["result"] for j, v in views.items()} == {j: r for j, (_, r) in expected.items()}
    assert {j: v["queue"] for j, v in views.items()} == {j: q for j, (q, _) in expected.items()}
    runs = runs_per_job(stack.setup)
    assert {j: runs.get(j, 0) for j in expected} == dict.fromkeys(expected, 1)
    for job_id, (queue, _) in expected.items():  # on the primary the harness says serves {queue}
        key = f"arqscale:{{{queue}}}:result:{job_id}"
        with stack.setup.primary_for_key(key).client() as node:
            assert node.exists(key) == 1, key


def test_a_poison_job_is_dead_lettered_and_requeued_through_the_api_and_the_cli(stack: Stack) -> None:
    queue = stack.queues[1]
    with stack.setup.client() as client:
        client.set(POISON, 1)
    for job_id in ("poison-api", "poison-cli"):
        enqueue(stack, queue, {"function": "poison", "job_id": job_id})
    dead = wait_for_states(stack.api, ["poison-api", "poison-cli"], {"dead", "completed"}, within=30)
    assert {v["state"] for v in dead.values()} == {"dead"}
    listing = requests.get(f"{stack.api}/v1/queues/{queue}/dead-letters", timeout=5).json()
    assert {item["job_id"] for item in listing["items"]} >= {"poison-api", "poison-cli"}
    entry = requests.get(f"{stack.api}/v1/queues/{queue}/dead-letters/poison-api", timeout=5).json()
    assert "poisoned" in entry["error"]
    key = f"arqscale:{{{queue}}}:dlq"  # the dead-letter store sits in the queue's slot
    with stack.setup.primary_for_key(key).client() as node:
        assert node.hexists(key, "poison-api")
    with stack.setup.client() as client:
        client.delete(POISON)
    requeued = requests.post(f"{stack.api}/v1/queues/{queue}/dead-letters/poison-api/requeue", timeout=5)
    assert requeued.status_code == 202, requeued.text
    by_cli = cli(stack.env, "dlq", "requeue", queue, "poison-cli")
    assert by_cli.returncode == 0, by_cli.stderr
    cured = wait_for_states(stack.api, ["poison-api", "poison-cli"], {"completed"}, within=30)
    assert {v["result"] for v in cured.values()} == {"cured"}
    listed = cli(stack.env, "dlq", "list", queue)
    assert listed.returncode == 0 and "poison-" not in listed.stdout, listed


def wait_for_ticks(stack: Stack, label: str, count: int, within: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while len(mine := [t for t in ticks(stack.setup) if t["label"] == label]) < count:
        assert time.monotonic() < deadline, ticks(stack.setup)
        time.sleep(0.2)
    return mine


def test_a_declared_schedule_fires_once_per_tick(stack: Stack) -> None:
    fired = [t["job"] for t in wait_for_ticks(stack, "declared", 3, within=20)]
    assert len(fired) == len(set(fired))  # each tick is one job
    listed = requests.get(f"{stack.api}/v1/queues/{stack.queues[0]}/schedules/beat", timeout=5)
    assert listed.status_code == 200, listed.text
    assert listed.json()["last_job"], listed.text


def test_a_schedule_created_through_the_api_fires(stack: Stack) -> None:
    queue = stack.queues[2]
    body = {"every": 1, "function": "tick", "args": ["runtime"]}
    created = requests.put(f"{stack.api}/v1/queues/{queue}/schedules/rt", json=body, timeout=5)
    assert created.status_code == 201, created.text
    fired = [t["job"] for t in wait_for_ticks(stack, "runtime", 2, within=20)]
    assert len(fired) == len(set(fired))
    assert requests.delete(f"{stack.api}/v1/queues/{queue}/schedules/rt", timeout=5).status_code in (200, 204)


def read_sse(response: requests.Response, until_job: str, event: str, within: float) -> list[dict[str, Any]]:
    """Server-Sent Events from a streaming response until ``event`` of ``until_job`` (bounded in time)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    fields: dict[str, str] = {}
    for raw in response.iter_lines(decode_unicode=True):
        assert time.monotonic() < deadline, seen
        if raw:
            if not raw.startswith(":"):
                name, _, value = raw.partition(":")
                fields[name] = value.lstrip(" ")
            continue
        if "data" in fields:
            data = json.loads(fields["data"])
            seen.append(data)
            if data["job"] == until_job and data["event"] == event:
                return seen
        fields = {}
    raise AssertionError(f"stream ended: {seen}")


def test_events_reach_the_api_the_sse_stream_and_the_cli(stack: Stack) -> None:
    queue = stack.queues[0]
    with requests.get(
        f"{stack.api}/v1/queues/{queue}/events", headers={"Accept": "text/event-stream"}, stream=True, timeout=10
    ) as stream:
        assert stream.status_code == 200
        enqueue(stack, queue, {"function": "work", "args": [7], "job_id": "evented"})
        live = [e["event"] for e in read_sse(stream, "evented", "completed", within=20) if e["job"] == "evented"]
    assert live == ["waiting", "active", "completed"]
    page = requests.get(f"{stack.api}/v1/jobs/evented/events", timeout=5).json()
    assert [e["event"] for e in page["events"]] == ["waiting", "active", "completed"]
    result = cli(stack.env, "events", queue, "--job", "evented", "--no-follow", "--json")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["event"] for line in result.stdout.splitlines()] == ["waiting", "active", "completed"]
    key = f"arqscale:{{{queue}}}:events"
    with stack.setup.primary_for_key(key).client() as node:
        assert node.xlen(key) >= 3


def metrics(stack: Stack) -> dict[str, float]:
    response = requests.get(stack.exporter.metrics_url, timeout=5)
    assert response.status_code == 200
    return parse_exposition(response.text)


def test_the_exporter_counts_each_state_exactly_and_its_metrics_api_answers(stack: Stack) -> None:
    """On the counted queue (a worker running 2 at a time): 1 dead, 2 active (held), 3 waiting behind
    them, 2 delayed; /metrics and the External Metrics API show exactly those, with every other queue's
    counts beside them (one read per shard serves them all)."""
    queue = stack.counted
    with stack.setup.client() as client:
        client.set(POISON, 1)
        client.set(hold_key("counted"), 1)
    try:
        enqueue(stack, queue, {"function": "poison", "job_id": "counted-dead"})
        wait_for_states(stack.api, ["counted-dead"], {"dead"}, within=20)
        for n in range(5):
            enqueue(stack, queue, {"function": "hold", "args": ["counted"], "job_id": f"counted-{n}"})
        for n in range(2):
            enqueue(stack, queue, {"function": "work", "args": [n], "job_id": f"later-{n}", "defer_seconds": 600})
        want = {"waiting": 3, "active": 2, "delayed": 2, "failed": 1}
        deadline = time.monotonic() + 20
        while True:
            samples = metrics(stack)
            got = {s: samples.get(f'bullmq_queue_{s}{{queue="{queue}"}}') for s in want}
            if got == want:
                break
            assert time.monotonic() < deadline, (got, stack.exporter.output()[-2000:])
            time.sleep(0.2)
        assert samples["arqscale_exporter_redis_up"] == 1
        for other in stack.queues:  # every queue of every shard is in the same scrape
            assert f'bullmq_queue_waiting{{queue="{other}"}}' in samples
        url = stack.exporter.external_url("bullmq_queue_waiting")
        response = get_insecure(url, params={"labelSelector": f"queue={queue}"})
        assert response.status_code == 200, response.text
        assert [item["value"] for item in response.json()["items"]] == ["3"]
    finally:
        with stack.setup.client() as client:
            client.delete(POISON, hold_key("counted"))
    wait_for_states(stack.api, [f"counted-{n}" for n in range(5)], {"completed"}, within=30)
    for n in range(2):
        assert job(stack.api, f"later-{n}")[1]["state"] == "deferred"
