"""Sentinel over TLS: data nodes and sentinels that speak only TLS (replication and the sentinels' own
links too), reached with ``REDIS_TLS`` and ``REDIS_SENTINEL_TLS`` and one CA file; a client that does
not speak TLS to the sentinels is told which sentinels did not answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arqscale.core.connection import MasterNotFound, create_redis, create_sync_redis
from arqscale.core.settings import RedisSettings
from sentinel_servers import SentinelSetup
from tls_material import make_tls_files

PASSWORD, SENTINEL_PASSWORD = "tls-data-pw-3", "tls-sentinel-pw-4"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    servers = SentinelSetup(
        tmp_path_factory.mktemp("sentinel-tls"), password=PASSWORD, sentinel_password=SENTINEL_PASSWORD, tls=files
    ).start()
    try:
        yield servers
    finally:
        servers.stop()


def settings_from(env: dict[str, str]) -> RedisSettings:
    return RedisSettings(**{k.removeprefix("REDIS_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]


async def test_tls_everywhere_and_a_failover(setup: SentinelSetup) -> None:
    settings = settings_from(setup.env())
    assert settings.display_url().startswith("rediss+sentinel://:***@")
    redis = create_redis(settings, socket_timeout=2, socket_connect_timeout=2)
    blocking = create_sync_redis(settings)
    try:
        await redis.set("over-tls", 1)
        assert blocking.get("over-tls") == b"1"
        old = setup.kill_primary()
        new = await asyncio.to_thread(setup.wait_for_promotion, old, 60)
        for _ in range(200):  # the outage: connection errors, then the new primary over TLS
            try:
                await redis.set("after", 1)
                break
            except (RedisConnectionError, RedisTimeoutError) as exc:
                assert PASSWORD not in str(exc) and SENTINEL_PASSWORD not in str(exc)
                await asyncio.sleep(0.05)
        assert int((await redis.info("server"))["tcp_port"]) == new  # the TLS port: no plain one
        assert (await redis.info("replication"))["role"] == "master"
        assert await redis.get("over-tls") == b"1"
        assert new == setup.replica.port
    finally:
        await redis.aclose()
        blocking.close()


def test_sentinels_without_tls_are_named(setup: SentinelSetup) -> None:
    env = setup.env() | {"REDIS_SENTINEL_TLS": "false"}
    client = create_sync_redis(settings_from(env), socket_timeout=1, socket_connect_timeout=1)
    with pytest.raises(MasterNotFound) as info:
        client.ping()
    message = str(info.value)
    assert "no sentinel answers" in message
    for port in setup.sentinel_ports:
        assert f"127.0.0.1:{port}" in message
    assert PASSWORD not in message and SENTINEL_PASSWORD not in message


def test_setup_is_tls_only(setup: SentinelSetup, tmp_path: Path) -> None:
    assert setup.tls is not None
    with setup.sentinel_client() as sentinel:
        assert sentinel.ping()
