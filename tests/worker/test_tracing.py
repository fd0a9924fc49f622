"""OpenTelemetry tracing (issue 15): a span per enqueue and per try, linked by the W3C context the payload
carries, recorded by the SDK's in-memory exporter; a real worker process exports through OTEL_* too."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from arq.jobs import Job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis
from test_worker import make_spec, running, wait_for

from arqscale.api.app import create_app
from arqscale.core import serializers, tracing
from arqscale.core.keys import job_key
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.schedule_spec import Schedule
from arqscale.core.schedules import Schedules
from arqscale.core.spec import QueueSpec
from arqscale.worker.loop import Worker
from worker_processes import TESTS

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def finished(redis: Redis, job_id: str) -> bool:
    return bool(await redis.exists(f"arq:result:{job_id}"))


async def test_an_enqueue_and_each_try_are_spans_of_one_trace(redis: Redis, spans: InMemorySpanExporter) -> None:
    spec = make_spec(max_tries=2, backoff={"strategy": "fixed", "delay": 0.05, "jitter": 0})
    producer = Producer(redis, {"q": spec})
    await producer.enqueue("q", "add", 2, 3, job_id="ok")
    await producer.enqueue("q", "fail", "always", job_id="bad")
    async with running(Worker(spec, redis, traced=True)):
        await wait_for(lambda: finished(redis, "ok"), what="ok done")
        await wait_for(lambda: finished(redis, "bad"), what="bad dead")
    sends = {s.attributes["messaging.message.id"]: s for s in named(spans, "send q")}
    assert set(sends) == {"ok", "bad"}
    assert all(s.kind is SpanKind.PRODUCER for s in sends.values())
    tries: dict[str, list[ReadableSpan]] = {}
    for span in named(spans, "process q"):
        tries.setdefault(str(span.attributes["messaging.message.id"]), []).append(span)
    [ok] = tries["ok"]
    assert ok.kind is SpanKind.CONSUMER
    assert ok.parent is not None and ok.parent.span_id == sends["ok"].context.span_id
    assert ok.context.trace_id == sends["ok"].context.trace_id
    assert ok.attributes["arqscale.job.outcome"] == "complete"
    assert ok.attributes["messaging.system"] == "arq"
    assert ok.status.status_code is StatusCode.UNSET
    bad = sorted(tries["bad"], key=lambda s: s.attributes["messaging.message.delivery_count"])
    assert [s.attributes["arqscale.job.outcome"] for s in bad] == ["retried", "dead"]
    assert all(s.context.trace_id == sends["bad"].context.trace_id for s in bad)
    assert all(s.status.status_code is StatusCode.ERROR for s in bad)
    assert all(any(e.name == "exception" for e in s.events) for s in bad)


async def test_the_payload_stays_readable_by_arq(redis: Redis, spans: InMemorySpanExporter) -> None:
    spec = make_spec()
    await Producer(redis, {"q": spec}).enqueue("q", "add", 1, 2, job_id="j")
    payload = serializers.json_loads(await redis.get(job_key("j")))
    assert set(payload) == {"t", "f", "a", "k", "et", tracing.PAYLOAD_KEY}
    assert payload[tracing.PAYLOAD_KEY]["traceparent"].startswith("00-")
    arq = ArqRedis(connection_pool=redis.connection_pool, job_deserializer=serializers.json_loads)
    info = await Job("j", arq, _queue_name=spec.queue_key, _deserializer=serializers.json_loads).info()
    assert info is not None and (info.function, list(info.args)) == ("add", [1, 2])


async def test_without_a_recording_provider_the_payload_is_arqs_own(redis: Redis) -> None:
    spec = make_spec()
    await Producer(redis, {"q": spec}).enqueue("q", "add", 1, 2, job_id="j")
    payload = serializers.json_loads(await redis.get(job_key("j")))
    assert set(payload) == {"t", "f", "a", "k", "et"}


async def test_a_batch_gives_each_job_its_own_context(redis: Redis, spans: InMemorySpanExporter) -> None:
    spec = make_spec()
    jobs = [JobRequest(function="add", args=[i, i], job_id=f"b{i}") for i in range(3)]
    await Producer(redis, {"q": spec}).enqueue_many("q", jobs)
    async with running(Worker(spec, redis, traced=True)):
        for i in range(3):
            await wait_for(lambda i=i: finished(redis, f"b{i}"), what=f"b{i}")
    [send] = named(spans, "send q")
    assert send.attributes["messaging.batch.message_count"] == 3
    creates = {s.attributes["messaging.message.id"]: s for s in named(spans, "create q")}
    assert set(creates) == {"b0", "b1", "b2"}
    assert all(c.parent is not None and c.parent.span_id == send.context.span_id for c in creates.values())
    for span in named(spans, "process q"):
        assert span.parent is not None
        assert span.parent.span_id == creates[span.attributes["messaging.message.id"]].context.span_id


async def test_a_schedules_job_is_traced_from_its_tick(redis: Redis, spans: InMemorySpanExporter) -> None:
    spec = make_spec()
    await Schedules(redis, {"q": spec}).put("q", Schedule(name="often", every=1, function="add", args=[1, 1]))
    async with running(Worker(spec, redis, traced=True)):
        await wait_for(lambda: redis.keys("arq:result:sched:q:often:*"), within=10, what="a tick's job done")
    sends = {s.context.span_id: s for s in named(spans, "send q")}
    ticks = [s for s in named(spans, "process q") if str(s.attributes["messaging.message.id"]).startswith("sched:")]
    assert ticks
    for span in ticks:
        assert span.parent is not None
        assert sends[span.parent.span_id].attributes["messaging.message.id"] == span.attributes["messaging.message.id"]


async def test_a_plain_arq_job_starts_its_own_trace(redis: Redis, spans: InMemorySpanExporter) -> None:
    spec = make_spec()
    arq = ArqRedis(connection_pool=redis.connection_pool, job_serializer=serializers.json_dumps)
    await arq.enqueue_job("add", 4, 5, _job_id="plain", _queue_name=spec.queue_key)
    async with running(Worker(spec, redis, traced=True)):
        await wait_for(lambda: finished(redis, "plain"), what="plain done")
    [span] = named(spans, "process q")
    assert span.parent is None and span.attributes["arqscale.job.outcome"] == "complete"


# Whatever a producer put under the trace key, the job runs: a malformed context starts a new trace.
hostile_contexts = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=80),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(
        st.sampled_from(["traceparent", "tracestate", "other"]),
        st.one_of(st.text(max_size=600), st.integers(), st.none(), st.just(TRACEPARENT)),
        max_size=3,
    ),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(context=hostile_contexts)
async def test_any_trace_value_in_a_payload_runs_the_job(
    redis: Redis, spans: InMemorySpanExporter, context: Any
) -> None:
    await redis.flushall()
    spans.clear()
    spec = make_spec()
    body = {"t": None, "f": "add", "a": [1, 1], "k": {}, "et": int(time.time() * 1000), tracing.PAYLOAD_KEY: context}
    await redis.set(job_key("h"), json.dumps(body))
    await redis.zadd(spec.queue_key, {"h": int(time.time() * 1000)})
    async with running(Worker(spec, redis, traced=True)):
        await wait_for(lambda: finished(redis, "h"), what="hostile job done")
    [span] = named(spans, "process q")
    assert span.attributes["arqscale.job.outcome"] == "complete"
    valid = isinstance(context, dict) and context.get("traceparent") == TRACEPARENT
    assert (span.parent is not None) is valid


@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[TestClient[Any, Any]]:
    spec: QueueSpec = make_spec()
    app = create_app({"q": spec}, redis, max_body_bytes=1 << 20, traced=True)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_an_http_enqueue_joins_the_callers_trace(
    redis: Redis, spans: InMemorySpanExporter, api: TestClient[Any, Any]
) -> None:
    reply = await api.post(
        "/v1/queues/q/jobs", json={"function": "add", "args": [1, 2]}, headers={"traceparent": TRACEPARENT}
    )
    assert reply.status == 202, await reply.text()
    [send] = named(spans, "send q")
    assert format(send.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert send.parent is not None and format(send.parent.span_id, "016x") == TRACEPARENT.split("-")[2]


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_opt_in_through_the_standard_variables(env: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted_by_env(env) is wanted


def _worker_env(redis_env: dict[str, str], tmp_path: Path, **otel: str) -> dict[str, str]:
    qfile = tmp_path / "queues.yaml"
    qfile.write_text(json.dumps({"queues": {"q": {"functions": ["worker_tasks.add"], "poll_interval": 0.05}}}))
    env = {k: v for k, v in redis_env.items() if not k.startswith("OTEL_")}
    env.update(
        otel, ARQSCALE_QUEUES_FILE=str(qfile), PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    )
    return env


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "arqscale", "worker", "--queue", "q", "--port", "0"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_a_worker_process_exports_its_tries_as_otel_asks(
    redis: Redis, redis_env: dict[str, str], tmp_path: Path
) -> None:
    env = _worker_env(redis_env, tmp_path, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="emails")
    await Producer(redis, {"q": make_spec()}).enqueue("q", "add", 1, 2, job_id="p")
    proc = _start_worker(env)
    try:
        await wait_for(lambda: finished(redis, "p"), within=20, what="job done by the process")
    finally:
        proc.terminate()
        out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, err.decode()
    assert '"name": "process q"' in out.decode(), out.decode()[-2000:]
    assert '"service.name": "emails"' in out.decode()


def test_a_worker_refuses_an_exporter_it_does_not_know(redis_env: dict[str, str], tmp_path: Path) -> None:
    env = _worker_env(redis_env, tmp_path, OTEL_TRACES_EXPORTER="zipkin")
    done = subprocess.run(
        [sys.executable, "-m", "arqscale", "worker", "--queue", "q", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'" in done.stderr
