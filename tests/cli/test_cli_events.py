"""``arqscale events``: the kept events as lines or JSON lines, and a live tail of one job, against a real
redis-server (the CLI runs as a subprocess on the built-in demo queues)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from arq.connections import ArqRedis
from redis.asyncio import Redis

from arqscale.core.producer import Producer
from arqscale.core.spec import demo_queues

SPECS = demo_queues()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arqscale", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_the_kept_events_as_lines_and_json(redis: Redis, redis_env: dict[str, str]) -> None:
    producer = Producer(redis, SPECS)
    queue = next(iter(SPECS))
    function = next(iter(SPECS[queue].function_names))
    await producer.enqueue(queue, function, job_id="cli-1", defer_seconds=600)
    # Our producer refuses such an id; plain arq takes any (its job gets an event once cancelled or picked up).
    arq = ArqRedis(connection_pool=redis.connection_pool)
    await arq.enqueue_job(function, _job_id="two\nlines", _queue_name=SPECS[queue].queue_key, _defer_by=600)
    await producer.cancel("two\nlines", queue)
    await producer.cancel("cli-1", queue)
    result = cli(redis_env, "events", queue, "--no-follow", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert [(r["event"], r["job"]) for r in rows] == [
        ("delayed", "cli-1"),
        ("cancelled", "two\nlines"),
        ("cancelled", "cli-1"),
    ]
    text = cli(redis_env, "events", queue, "--no-follow", "--job", "cli-1")
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and "delayed" in lines[0] and f"func={function}" in lines[0] and "cancelled" in lines[1]
    # An id that would break a line is shown encoded, as every other command shows it.
    encoded = cli(redis_env, "events", queue, "--no-follow", "--job", "two%0Alines", "--encoded")
    assert encoded.stdout.count("\n") == 1 and "two%0Alines [encoded]" in encoded.stdout, encoded.stdout
    bad = cli(redis_env, "events", queue, "--after", "yesterday")
    assert bad.returncode == 2 and "--after" in bad.stderr


async def test_following_a_job_prints_its_events_as_they_happen(redis: Redis, redis_env: dict[str, str]) -> None:
    queue = next(iter(SPECS))
    function = next(iter(SPECS[queue].function_names))
    producer = Producer(redis, SPECS)
    await producer.enqueue(queue, function, job_id="live", defer_seconds=600)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "arqscale", "events", queue, "--job", "live", "--json",
        env=redis_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert first["event"] == "delayed"
        await producer.cancel("live", queue)
        second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert (second["event"], second["job"]) == ("cancelled", "live")
    finally:
        proc.kill()
        await proc.wait()
