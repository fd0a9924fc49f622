"""Shared fixtures: a real redis-server per test session, flushed between tests."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).parent))

import transport_origins
from redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent

transport_origins.install()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    transport_origins.current_test = item.nodeid
    yield


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def redis_env(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for subprocesses (workers, API, exporter) pointing at the test Redis."""
    for name in list(os.environ):
        if name.startswith(("REDIS_", "ARQSCALE_")):
            monkeypatch.delenv(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env["REDIS_URL"] = redis_server.url
    env["PYTHONUNBUFFERED"] = "1"
    return env
