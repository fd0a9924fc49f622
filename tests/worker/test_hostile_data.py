"""Hostile data never jams a worker slot, never turns a route into a 500, and keeps the real error.

Jobs are written the way a careless or hostile plain-arq producer writes them (straight into Redis, JSON
serializer, so nothing of ours checks them first): lone UTF-16 surrogates in args, kwargs keys, results,
error texts and tracebacks; nesting deeper than pydantic's serializer allows; large values. Real
``arqscale worker`` and ``arqscale api`` processes against the test redis-server; hypothesis generates
the values (docs/reliability.md, "Hostile data").
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import requests
from arq.jobs import serialize_job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_processes import api_env, api_process
from arqscale.core import keys, scores
from arqscale.core.keys import QueueKeys
from arqscale.core.models import DeadJob
from arqscale.core.safe_data import ERROR_CHARS, PREVIEW_BYTES, TRACEBACK_CHARS, escaped
from arqscale.core.serializers import json_dumps
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.worker import outcomes
from arqscale.worker.pickup import Picked
from redis_server import RedisServer
from worker_processes import TESTS, StartWorker, stop_all, worker_starter

QUEUES: dict[str, Any] = {
    "q": {
        "functions": [
            "worker_tasks.echo",
            "worker_tasks.nested_result",
            "worker_tasks.fail_with",
            "worker_tasks.add",
        ],
        "concurrency": 2,  # the issue's case: two jammed slots stopped a concurrency-2 worker for good
        "max_tries": 2,
        "lease_seconds": 2,
        "poll_interval": 0.05,
        "backoff": {"strategy": "fixed", "delay": 0, "jitter": 0},
    }
}
SPEC: QueueSpec = parse_queues({"queues": QUEUES})["q"]
QKEYS = QueueKeys.for_queue("q", SPEC.queue_key)

# Text as a hostile producer sends it: any code point, lone surrogates (category Cs) included.
TEXT = st.text(st.characters(categories=["L", "N", "P", "S", "Zs", "Cc", "Cs"]), max_size=12)
LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
PLAIN = st.recursive(LEAVES, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=8)


def nest(value: Any, depth: int) -> Any:
    for n in range(depth):
        value = [value] if n % 2 else {"k": value}
    return value


# Deeper than pydantic's serializer (a few hundred) but within what the JSON decoder reads.
DEEP = st.builds(nest, PLAIN, st.integers(0, 400))
BIG = st.builds(lambda n, c: c * n, st.integers(0, 200_000), st.sampled_from(["x", "\ud800", "é"]))
HOSTILE = PLAIN | DEEP | BIG


# ----------------------------------------------------------------------------- the records (pure)


@settings(max_examples=150, deadline=None)
@given(
    args=st.lists(HOSTILE, max_size=3),
    kwargs=st.dictionaries(TEXT, HOSTILE, max_size=3),
    error=TEXT | BIG,
    tb=st.none() | TEXT | BIG,
)
def test_every_record_a_worker_builds_can_be_sent_to_redis(
    args: list[Any], kwargs: dict[str, Any], error: str, tb: str | None
) -> None:
    payload = serialize_job("fail_with", tuple(args), kwargs, 1, 0, serializer=json_dumps)
    assert payload is not None
    job = Picked("j", payload, 2, scores.job_score(0, SPEC.normal_priority, SPEC), None, "w.1")
    decoded = outcomes.Decoded("fail_with", tuple(args), kwargs, None, 0)
    dead = outcomes.dead(SPEC, job, decoded, error, tb, 1_000)
    retry, _ = outcomes.retry(SPEC, job, 1, error, tb, 1_000)
    for record in (dead, retry):
        # Every field goes as bytes: the worker frames them itself (Finish.packed), or redis-py does (cluster).
        kind, *fields = record.wire()
        assert kind == record.kind.encode() and all(isinstance(field, bytes) for field in fields), record.kind
    entry = DeadJob.model_validate_json(dead.a)
    # The real error survives, escaped and capped, never replaced by an encoder's complaint.
    assert entry.error.startswith(escaped(error)[:ERROR_CHARS])
    assert json.loads(retry.b)["error"].startswith(escaped(error)[:ERROR_CHARS])
    # The entry keeps the payload once (requeue) and a preview of the arguments, not copies of them.
    fixed = 2_000 + 4 * (ERROR_CHARS + TRACEBACK_CHARS + 2 * PREVIEW_BYTES)  # up to 4 UTF-8 bytes a character
    assert len(dead.a) <= len(payload) * 4 / 3 + fixed
    assert (
        isinstance(dead.b, bytes) and len(dead.b) <= (PREVIEW_BYTES * 2 if len(payload) <= PREVIEW_BYTES else 0) + fixed
    )


def test_an_exception_whose_str_fails_still_gives_an_error_text() -> None:
    class Hostile(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert outcomes.describe(Hostile()) == "<str() of the exception failed: RuntimeError>"
    assert outcomes.describe(ValueError("\ud800")) == "\ud800"  # escaped later, where it is stored


# ----------------------------------------------------------------------------- real processes


def enqueue_raw(r: sync_redis.Redis, function: str, *args: Any, job_id: str | None = None, **kwargs: Any) -> str:
    """What a plain arq producer with a JSON serializer writes: no check of ours on the way."""
    job_id = job_id or uuid.uuid4().hex
    payload = serialize_job(function, args, kwargs, None, int(time.time() * 1000), serializer=json_dumps)
    assert payload is not None
    r.set(keys.job_key(job_id), payload, px=3_600_000)
    r.zadd(SPEC.queue_key, {job_id: int(time.time() * 1000)})
    return job_id


def settled(r: sync_redis.Redis, job_ids: list[str], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        left = [j for j in job_ids if not r.exists(keys.result_key(j)) and not r.hexists(QKEYS.dlq, j)]
        if not left:
            return
        assert time.monotonic() < deadline, f"jobs never finished (a jammed slot?): {left}"
        time.sleep(0.02)


@pytest.fixture
def api(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    """A real ``arqscale api`` on the test Redis and the queues above."""
    import yaml

    qfile = tmp_path / "api-queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": QUEUES}))
    env = api_env(redis_server.url, ARQSCALE_QUEUES_FILE=str(qfile))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    log = tmp_path / "api.log"
    with api_process(env, log) as url:
        yield url
    assert "unexpected error" not in log.read_text(errors="replace")


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


def shown_everywhere(api: str, job_id: str) -> dict[str, Any]:
    """The job through every route that shows it; none may answer 500."""
    status = requests.get(f"{api}/v1/jobs/{job_id}", timeout=10)
    assert status.status_code == 200, status.text
    body: dict[str, Any] = status.json()
    if body["state"] == "dead":
        entry = requests.get(f"{api}/v1/queues/q/dead-letters/{job_id}", timeout=10)
        assert entry.status_code == 200, entry.text
        body["entry"] = entry.json()
    for route in ("/v1/queues/q/jobs?state=completed", "/v1/queues/q/jobs?state=failed", "/v1/queues/q/dead-letters"):
        answer = requests.get(api + route, timeout=10)
        assert answer.status_code == 200, (route, answer.text)
    return body


async def test_the_issues_examples_end_and_free_their_slots(
    workers: StartWorker, r: sync_redis.Redis, api: str
) -> None:
    worker = await workers(QUEUES).ready()
    deep = nest("leaf", 300)
    jobs = {
        "surrogate-key-fails": enqueue_raw(r, "fail_with", "boom", **{"\ud800": 1}),
        "surrogate-key-succeeds": enqueue_raw(r, "echo", **{"\ud800": "\udfff"}),
        "surrogate-error": enqueue_raw(r, "fail_with", "bad \ud800 text"),
        "deep-args-unknown-function": enqueue_raw(r, "no_such_task", deep),
        "deep-args-failing-task": enqueue_raw(r, "fail_with", "deep failure", deep),
        "deep-result": enqueue_raw(r, "nested_result", 300),
        "surrogate-result": enqueue_raw(r, "nested_result", 3, "\ud800"),
        "huge-argument": enqueue_raw(r, "fail_with", "huge", "x" * 2_000_000),
    }
    settled(r, list(jobs.values()))
    seen = {name: shown_everywhere(api, job_id) for name, job_id in jobs.items()}
    assert seen["surrogate-key-fails"]["state"] == "dead"
    assert seen["surrogate-key-fails"]["error"] == "ValueError: boom"
    assert seen["surrogate-key-fails"]["entry"]["kwargs"] == {"\\ud800": 1}  # escaped, readable
    assert seen["surrogate-key-succeeds"]["state"] == "completed"
    assert seen["surrogate-key-succeeds"]["result"] == {"args": [], "kwargs": {"\\ud800": "\\udfff"}}
    assert seen["surrogate-error"]["error"] == "ValueError: bad \\ud800 text"
    # The real error survives deep arguments (not "PydanticSerializationError: ... depth exceeded").
    assert seen["deep-args-unknown-function"]["error"].startswith("unknown function 'no_such_task'")
    assert seen["deep-args-failing-task"]["error"] == "ValueError: deep failure"
    assert seen["deep-result"]["state"] == "completed" and seen["surrogate-result"]["result"] == [[["\\ud800"]]]
    huge = seen["huge-argument"]["entry"]
    assert huge["error"] == "ValueError: huge" and len(json.dumps(huge["args"])) < PREVIEW_BYTES + 200
    assert len(r.hget(QKEYS.dlq, jobs["huge-argument"]) or b"") < 2_000_000 * 4 / 3 + 50_000  # the payload, once
    # Every slot is free: the worker still runs jobs, and nothing is left holding a lease.
    ok = enqueue_raw(r, "add", 1, 2)
    settled(r, [ok], within=10)
    assert r.zcount(QKEYS.queue, scores.LEASED, "+inf") == 0 and worker.proc.poll() is None


JOB = st.tuples(
    st.sampled_from(["echo", "fail_with", "no_such_task", "nested_result"]),
    st.lists(HOSTILE, max_size=2),
    st.dictionaries(TEXT, HOSTILE, max_size=2),
)


async def test_generated_hostile_jobs_all_end_and_every_route_shows_them(
    workers: StartWorker, r: sync_redis.Redis, api: str
) -> None:
    worker = await workers(QUEUES).ready()

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.lists(JOB, min_size=1, max_size=3))
    def batch(jobs: list[tuple[str, list[Any], dict[str, Any]]]) -> None:
        ids = []
        for function, args, kwargs in jobs:
            if function == "nested_result":  # its own signature: a depth and a leaf from the hostile text
                args, kwargs = [len(args) * 150, str(kwargs)], {}
            if function == "fail_with":
                args = ["generated", *args]
            ids.append(enqueue_raw(r, function, *args, **{f"k_{k}": v for k, v in kwargs.items()}))
        settled(r, ids)
        for (function, _, _), job_id in zip(jobs, ids, strict=True):
            body = shown_everywhere(api, job_id)
            expected = {"echo": "completed", "nested_result": "completed"}.get(function, "dead")
            assert body["state"] == expected, body
            if function == "no_such_task":
                assert body["error"].startswith("unknown function"), body
            if function == "fail_with":
                assert body["error"].startswith("ValueError"), body

    batch()
    assert r.zcount(QKEYS.queue, scores.LEASED, "+inf") == 0 and worker.proc.poll() is None
