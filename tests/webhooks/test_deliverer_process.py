"""``arqscale webhooks`` as a real process: SIGKILLed mid-run, Redis restarted under it, SIGTERM, probes,
metrics, and secrets that never reach its output."""

from __future__ import annotations

import asyncio
import base64
import signal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from redis_server import RedisServer
from webhook_support import (
    CALLBACK_SECRET,
    SECRET,
    DelivererProcess,
    Receiver,
    emit,
    hooks_queue,
    process_env,
    receiving,
    until,
)

SLOW = {"retry": {"max_attempts": 50, "initial_delay": 0.05, "max_delay": 0.5, "timeout_seconds": 1}}


def assert_no_secret(output: str) -> None:
    for secret in (SECRET, CALLBACK_SECRET):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        for form in (secret, secret.removeprefix("whsec_"), key.decode(errors="replace"), key.hex()):
            assert form not in output, "a webhook secret reached the output"


def check_every_id(receiver: Receiver, expected: set[str]) -> int:
    """Every expected id arrived, only those, each id always with the same body; returns the duplicates."""
    got = receiver.by_id()
    assert set(got) == expected, (len(set(got)), len(expected), sorted(expected - set(got))[:5])
    for copies in got.values():
        assert all(c.body == copies[0].body for c in copies)
    return sum(len(c) - 1 for c in got.values())


async def test_sigkill_mid_run_loses_nothing(redis: Redis, redis_env: dict[str, str], tmp_path: Path) -> None:
    receiver = Receiver(delay=0.05, fail_first={"main": 1})
    queues = hooks_queue(receiver, webhooks=SLOW)
    env = process_env(redis_env, tmp_path, queues, ARQSCALE_WEBHOOKS_CONCURRENCY="8")
    expected: set[str] = set()
    async with receiving(receiver):
        first = await DelivererProcess(env, tmp_path / "d0.log").ready()
        for i in range(150):
            expected.add(f"q:{await emit(redis, f'k{i}')}:main")
        await until(lambda: len(receiver.received) >= 30, "some deliveries before the kill")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert len(receiver.ids()) < len(expected), "all delivered before the kill: nothing was tested"
        for i in range(150, 200):  # events written while no deliverer runs
            expected.add(f"q:{await emit(redis, f'k{i}')}:main")
        # Another consumer name: what the killed one had read but not stored is claimed once idle.
        other = {**env, "ARQSCALE_WEBHOOKS_CONSUMER": "deliverer-1"}
        second = await DelivererProcess(other, tmp_path / "d1.log").ready()
        await until(lambda: receiver.ids() >= expected, "every event delivered", within=60)
        second.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.proc.wait, 20) == 0
    duplicates = check_every_id(receiver, expected)
    assert not receiver.rejected
    print(f"duplicates after SIGKILL: {duplicates}")
    assert_no_secret(first.output() + second.output())  # DEBUG logs of failed attempts and retries included
    assert "failed (attempt 1 of 50)" in first.output() + second.output()


async def test_redis_restart_during_delivery(redis_env: dict[str, str], tmp_path: Path) -> None:
    own = RedisServer(tmp_path / "own-redis", aof=True).start()
    client = Redis.from_url(own.url)
    receiver = Receiver(delay=0.02)
    queues = hooks_queue(receiver, webhooks=SLOW)
    env = process_env({**redis_env, "REDIS_URL": own.url}, tmp_path, queues)
    expected: set[str] = set()

    async def emit_retrying(job: str) -> None:
        while True:
            try:
                expected.add(f"q:{await emit(client, job)}:main")
                return
            except (RedisError, OSError):
                await asyncio.sleep(0.05)

    try:
        async with receiving(receiver):
            proc = await DelivererProcess(env, tmp_path / "d.log").ready()
            for i in range(100):
                await emit_retrying(f"r{i}")
            await until(lambda: len(receiver.received) >= 10, "some deliveries before the restart")
            await asyncio.to_thread(own.restart, down_for=1.0)
            for i in range(100, 150):
                await emit_retrying(f"r{i}")
            await until(lambda: receiver.ids() >= expected, "every event delivered", within=60)
            assert "redis reachable again" in proc.output()
            proc.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.proc.wait, 20) == 0
        check_every_id(receiver, expected)
    finally:
        await client.aclose()
        own.kill()


async def test_probes_metrics_sigterm_and_no_secret_in_output(
    redis: Redis, redis_env: dict[str, str], tmp_path: Path
) -> None:
    receiver = Receiver(delay=1.0)
    queues = hooks_queue(receiver, webhooks=SLOW)
    env = process_env(redis_env, tmp_path, queues)
    async with receiving(receiver):
        proc = await DelivererProcess(env, tmp_path / "d.log").ready()
        assert (await proc.probe("/livez") or (0, ""))[0] == 200
        for i in range(5):
            await emit(redis, f"t{i}")
        await until(lambda: sum(receiver.tries.values()) == 5, "5 attempts under way")
        proc.proc.send_signal(signal.SIGTERM)  # the attempts under way finish (1 s each) within the drain
        assert await asyncio.to_thread(proc.proc.wait, 20) == 0
    assert len(receiver.received) == 5
    output = proc.output()
    assert "stopping: no more reads; 5 delivery attempt(s) under way" in output
    assert_no_secret(output)


async def test_metrics_page(redis: Redis, redis_env: dict[str, str], tmp_path: Path) -> None:
    receiver = Receiver()
    env = process_env(redis_env, tmp_path, hooks_queue(receiver))
    async with receiving(receiver):
        proc = await DelivererProcess(env, tmp_path / "d.log").ready()
        await emit(redis, "m")
        delivered = 'arqscale_webhooks_deliveries_total{endpoint="main",outcome="delivered",queue="q"} 1.0'

        async def counted() -> tuple[int, str] | None:
            answer = await proc.probe("/metrics")
            return answer if answer is not None and delivered in answer[1] else None

        answer = await until(counted, "the delivery counted")
        proc.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.proc.wait, 20) == 0
    assert answer is not None and answer[0] == 200
    assert 'arqscale_webhooks_deliveries_total{endpoint="main",outcome="delivered",queue="q"} 1.0' in answer[1]
    assert "arqscale_webhooks_redis_up 1.0" in answer[1]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"TEST_WHSEC": ""}, "environment variable TEST_WHSEC is not set"),
        ({"TEST_WHSEC": "whsec_c2hvcnQ="}, "5 bytes"),
    ],
)
async def test_a_missing_or_bad_secret_stops_start_up(
    redis_env: dict[str, str], tmp_path: Path, change: dict[str, Any], said: str
) -> None:
    env = process_env(redis_env, tmp_path, hooks_queue(Receiver()), **change)
    proc = DelivererProcess(env, tmp_path / "d.log")
    code = await asyncio.to_thread(proc.proc.wait, 30)
    assert code == 2
    assert said in proc.output()
    assert CALLBACK_SECRET.removeprefix("whsec_") not in proc.output()
