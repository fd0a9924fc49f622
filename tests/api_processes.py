"""A real ``arqscale api`` subprocess for tests: started on a free port, ready when ``/livez`` answers,
its output kept in a log the test reads back (a 500 logs "unexpected error" with its traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

from redis_server import free_port


def api_env(redis_url: str, **settings: str) -> dict[str, str]:
    """This process' environment without REDIS_* and ARQSCALE_*, pointed at ``redis_url``, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    return env | {"REDIS_URL": redis_url, "ARQSCALE_LOG_LEVEL": "WARNING", **settings}


@contextmanager
def api_process(env: Mapping[str, str], log: Path, within: float = 20.0) -> Iterator[str]:
    """Run ``arqscale api`` with ``env``, its output in ``log``; yields its base URL and stops it after."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arqscale", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + within
        while True:
            try:
                if requests.get(url + "/livez", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"arqscale api did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
