"""The local stack's private Redis, started the way a newcomer's first `make demo` starts it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from redis import Redis

from arqscale.demo.stack import start_redis


async def test_private_redis_starts_from_a_relative_demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `make demo` runs with the default ./.arqscale/demo: a relative path. redis-server changes into --dir
    # before it opens --logfile, so a relative log path once made it exit at start-up.
    monkeypatch.chdir(tmp_path)
    handle = await start_redis({"PATH": "/usr/bin:/bin"}, Path(".arqscale/demo/redis"), io.StringIO())
    try:
        assert handle.proc is not None
        client = Redis.from_url(handle.url)
        assert client.ping()
        client.close()
        assert (tmp_path / ".arqscale/demo/redis/redis.log").exists()
    finally:
        handle.stop()
