"""Where the API can see a problem at enqueue, it answers 422 naming it (issue 10, points 1 and 10).

Generated JSON bodies with lone surrogates, deep nesting and large values: every answer is 202 or a 4xx
naming the field, never a 500; whatever is accepted passes the same checks every enqueue path applies.
The Python Producer (and so the CLI) refuses the same things.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from arqscale.api.app import create_app
from arqscale.core.producer import Producer
from arqscale.core.safe_data import MAX_DEPTH, UnsafeArguments, check_arguments
from arqscale.core.spec import parse_queues

SPECS = parse_queues({"queues": {"q": {"functions": ["worker_tasks.echo"]}}})
TEXT = st.text(st.characters(categories=["L", "N", "P", "S", "Zs", "Cs"]), max_size=8)
PLAIN = st.recursive(
    st.none() | st.integers() | TEXT,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3),
    max_leaves=6,
)


def nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = PLAIN | st.builds(nest, PLAIN, st.integers(0, 200))


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SPECS, redis, max_body_bytes=4 * 1024 * 1024)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_the_issues_examples_are_refused_by_name(client: TestClient[Any, Any], redis: Redis) -> None:
    cases = {
        "kwargs (a key)": {"function": "echo", "kwargs": {"\ud800": 1}},
        "args.0": {"function": "echo", "args": ["\ud800"]},
        "args.0.0": {"function": "echo", "args": [nest(1, MAX_DEPTH + 5)]},
    }
    for field, body in cases.items():
        answer = await client.post(
            "/v1/queues/q/jobs", data=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        payload = await answer.json()
        assert answer.status == 422 and payload["error"] == "invalid_arguments", payload
        assert payload["details"][0]["field"].startswith(field.split(".")[0]), payload
    big = {"function": "echo", "args": ["x" * 1_100_000]}
    headers = {"Content-Type": "application/json"}
    answer = await client.post("/v1/queues/q/jobs", data=io.BytesIO(json.dumps(big).encode()), headers=headers)
    assert answer.status == 422 and "over the limit" in (await answer.json())["message"]
    assert await redis.dbsize() == 0  # nothing was written


async def test_the_python_producer_refuses_the_same() -> None:
    producer = Producer(Redis(), SPECS, max_payload_bytes=2048)  # refused before any Redis call
    with pytest.raises(UnsafeArguments, match="over the limit of 2048 bytes"):
        await producer.enqueue("q", "echo", "x" * 4096)
    with pytest.raises(UnsafeArguments, match="lone UTF-16 surrogate"):
        await producer.enqueue("q", "echo", **{"\udc80": 1})
    await producer.redis.aclose()


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=st.lists(HOSTILE, max_size=3), kwargs=st.dictionaries(TEXT, HOSTILE, max_size=3))
async def test_generated_bodies_are_accepted_or_refused_by_name_never_500(
    client: TestClient[Any, Any], args: list[Any], kwargs: dict[str, Any]
) -> None:
    body = json.dumps({"function": "echo", "args": args, "kwargs": kwargs})
    answer = await client.post("/v1/queues/q/jobs", data=body, headers={"Content-Type": "application/json"})
    payload = await answer.json()
    try:
        check_arguments(args, kwargs)
    except UnsafeArguments as exc:
        assert answer.status == 422 and payload["details"][0]["field"] == exc.field, payload
    else:
        assert answer.status == 202, payload
