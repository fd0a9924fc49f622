"""Schemathesis fuzzes every route of the served OpenAPI description: no input may cause a 5xx.

The API runs as a real ``arqscale api`` subprocess against the test redis-server, with a bearer token.
The fuzz is bounded (a few dozen examples per operation) so the suite stays fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from arqscale.api.openapi import build_document
from redis_server import RedisServer, free_port

TOKEN = "fuzz-token-123"
LIMIT = 65536
schema = schemathesis.openapi.from_dict(build_document(LIMIT))


@pytest.fixture(scope="module")
def api_url(redis_server: RedisServer) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {
        "REDIS_URL": redis_server.url,
        "ARQSCALE_API_TOKEN": TOKEN,
        "ARQSCALE_API_MAX_BODY_BYTES": str(LIMIT),
        "ARQSCALE_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "arqscale", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(url + "/livez", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.communicate(timeout=5)[0].decode(errors="replace") if proc.poll() is not None else ""
            proc.kill()
            pytest.fail(f"arqscale api did not start: {out}")
        time.sleep(0.05)
    yield url
    proc.terminate()
    out = proc.communicate(timeout=10)[0].decode(errors="replace")
    # A 500 from the catch-all is logged with its traceback: there must be none.
    assert "unexpected error" not in out, out
    assert TOKEN not in out


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_causes_a_server_error(case: schemathesis.Case, api_url: str) -> None:
    case.call_and_validate(
        base_url=api_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
        timeout=10,
    )
