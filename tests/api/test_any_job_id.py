"""Every id plain arq accepts can be managed one by one (issue 10, point 5).

A plain arq producer may use any text as a job id: spaces, newlines, ``/``, ``%``, markup, non-ASCII,
NUL. Generated ids are enqueued with arq's own ``enqueue_job``, dead-lettered with the worker protocol's
writes, then viewed, requeued, cancelled and purged through a real ``arqscale api`` process (the id
percent-encoded as one path segment) and through real ``arqscale`` CLI processes, against the test
redis-server. Our own enqueue path still refuses such ids with a 422 naming ``job_id``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator

import pytest
import requests
from arq.connections import ArqRedis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from api_processes import api_env, api_process
from arqscale.core.serializers import json_dumps
from arqscale.core.spec import demo_queues
from protocol_steps import bury, pick_up
from redis_server import RedisServer

SPECS = demo_queues()  # what the API and CLI serve without a queues file
QUEUE = "verification"
FUNCTION = "verify_document"
# Any text redis-py can send: every code point but lone surrogates (no UTF-8 encoder takes them).
IDS = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=24)


def _plain_arq_dead_letter(redis_url: str, job_id: str) -> None:
    """What a plain arq producer and our worker leave: a job under ``job_id``, then its dead letter."""

    async def go() -> None:
        redis = Redis.from_url(redis_url)
        arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)  # the queue's serializer
        try:
            await redis.flushall()
            spec = SPECS[QUEUE]
            job = await arq.enqueue_job(FUNCTION, {"doc": "x"}, _job_id=job_id, _queue_name=spec.queue_key)
            assert job is not None and job.job_id == job_id
            await pick_up(redis, spec, job_id)
            await bury(redis, spec, job_id, error="ProviderError: no")
        finally:
            await redis.aclose()

    asyncio.run(go())


@pytest.fixture(scope="module")
def api_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("api") / "api.log"
    with api_process(api_env(redis_server.url), log) as url:
        yield url
    assert "unexpected error" not in log.read_text(errors="replace")


def segment(job_id: str) -> str:
    """The documented path form: quote(safe="") makes "/" %2F too, so the id stays one segment; quote leaves
    dots alone, and clients drop the segments "." and "..", so those two are sent as %2E and %2E%2E
    (which requests sends as given)."""
    seg = urllib.parse.quote(job_id, safe="")
    return seg.replace(".", "%2E") if seg in (".", "..") else seg


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(job_id=IDS)
@example(job_id="a/b")
@example(job_id="..")
@example(job_id=".")
@example(job_id="line\nbreak <b>x</b>")
@example(job_id="%FF")
def test_every_arq_id_is_viewed_requeued_cancelled_and_purged_over_http(
    api_url: str, redis_server: RedisServer, job_id: str
) -> None:
    _plain_arq_dead_letter(redis_server.url, job_id)
    dead = f"/v1/queues/{QUEUE}/dead-letters/"
    seg = segment(job_id)

    entry = requests.get(api_url + dead + seg, timeout=10)
    assert entry.status_code == 200 and entry.json()["job_id"] == job_id, entry.text
    status = requests.get(f"{api_url}/v1/jobs/{seg}", timeout=10)
    assert status.status_code == 200 and status.json()["state"] == "dead", status.text
    assert status.json()["job_id"] == job_id

    requeued = requests.post(f"{api_url}{dead}{seg}/requeue", timeout=10)
    assert requeued.status_code == 202 and requeued.json()["job_id"] == job_id, requeued.text
    assert requests.get(f"{api_url}/v1/jobs/{seg}", timeout=10).json()["state"] == "queued"

    cancelled = requests.post(f"{api_url}/v1/jobs/{seg}/cancel", timeout=10)
    assert cancelled.status_code == 202 and cancelled.json()["job_id"] == job_id, cancelled.text
    assert requests.get(f"{api_url}/v1/jobs/{seg}", timeout=10).json()["state"] == "cancelled"

    _plain_arq_dead_letter(redis_server.url, job_id)
    purged = requests.delete(api_url + dead + seg, timeout=10)
    assert purged.status_code == 200 and purged.json()["purged"] == 1, purged.text
    assert requests.get(api_url + dead + seg, timeout=10).status_code == 404


def test_a_segment_that_is_not_utf8_is_a_422_not_another_id(api_url: str, redis_server: RedisServer) -> None:
    # aiohttp's match_info would read %FF as the literal text "%FF"; that id exists, yet it is not asked for.
    _plain_arq_dead_letter(redis_server.url, "%FF")
    answer = requests.get(f"{api_url}/v1/queues/{QUEUE}/dead-letters/%FF", timeout=10)
    assert answer.status_code == 422 and answer.json()["details"][0]["field"] == "job_id", answer.text
    assert requests.get(f"{api_url}/v1/queues/{QUEUE}/dead-letters/%25FF", timeout=10).status_code == 200


@pytest.mark.parametrize("job_id", ["a/b", "with space", "<b>", "ü", ".."])
def test_our_enqueue_path_refuses_ids_outside_its_alphabet_by_name(api_url: str, job_id: str) -> None:
    body = {"function": FUNCTION, "args": [{"doc": "x"}], "job_id": job_id}
    answer = requests.post(f"{api_url}/v1/queues/{QUEUE}/jobs", json=body, timeout=10)
    assert answer.status_code == 422 and answer.json()["details"][0]["field"] == "job_id", answer.text


# ---- the CLI ----------------------------------------------------------------------------------------


def _cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {"REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "arqscale", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


# Few examples: each runs eight CLI processes, about a second each.
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(job_id=IDS)
@example(job_id="-line\nbreak\x1b[31m <b>")
@example(job_id="a\x00b/ü")
def test_every_arq_id_is_shown_requeued_cancelled_and_purged_by_the_cli(redis_server: RedisServer, job_id: str) -> None:
    url = redis_server.url
    _plain_arq_dead_letter(url, job_id)
    # argv carries no NUL: such ids go in percent-encoded, as the listings show them. "--" ends the options
    # (they come first: argparse takes no options after it), so an id starting with "-" is an id.
    given_id = urllib.parse.quote(job_id, safe="")
    listed = _cli(url, "dlq", "list", QUEUE)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2, listed
    assert "\x1b" not in listed.stdout
    if not job_id.isprintable():
        assert given_id + " [encoded]" in listed.stdout

    shown = _cli(url, "dlq", "show", "--encoded", "--json", "--", QUEUE, given_id)
    assert shown.returncode == 0 and json.loads(shown.stdout)["job_id"] == job_id, shown
    status = _cli(url, "status", "--encoded", "--json", "--", given_id)
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "dead", status
    requeued = _cli(url, "dlq", "requeue", "--encoded", "--", QUEUE, given_id)
    assert requeued.returncode == 0 and requeued.stdout.startswith("requeued "), requeued
    cancelled = _cli(url, "cancel", "--encoded", "--", given_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled

    _plain_arq_dead_letter(url, job_id)
    purged = _cli(url, "dlq", "purge", "--encoded", "--", QUEUE, given_id)
    assert purged.returncode == 0 and purged.stdout.startswith("purged 1 "), purged
    if "\x00" not in job_id:  # and, where argv can carry it, the id as it is
        _plain_arq_dead_letter(url, job_id)
        assert _cli(url, "dlq", "purge", "--", QUEUE, job_id).stdout.startswith("purged 1 ")
