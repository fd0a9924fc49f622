"""``arqscale exporter`` as a command: configuration mistakes, and the metrics API switched off."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arqscale.exporter.tls_certs import issue
from exporter_support import get
from redis_server import free_port


def exporter_env(redis_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**redis_env, "ARQSCALE_EXPORTER_HOST": "127.0.0.1", **extra}


def test_help_names_the_endpoints() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "arqscale", "exporter", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert "External Metrics API" in out.stdout and "--no-metrics-api" in out.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ARQSCALE_METRICS_API_CERT_FILE": "/nonexistent/tls.crt"}, "set both ARQSCALE_METRICS_API_CERT_FILE"),
        (
            {"ARQSCALE_METRICS_API_CERT_FILE": "/nonexistent/tls.crt", "ARQSCALE_METRICS_API_KEY_FILE": "/x/tls.key"},
            "ARQSCALE_METRICS_API_CERT_FILE: /nonexistent/tls.crt does not exist",
        ),
        ({"ARQSCALE_METRICS_API_CLIENT_CA_FILE": "/nonexistent/ca.crt"}, "ARQSCALE_METRICS_API_CLIENT_CA_FILE"),
        ({"ARQSCALE_EXPORTER_REFRESH_SECONDS": "0"}, "exporter_refresh_seconds"),
    ],
)
def test_bad_settings_stop_start_up_with_a_clear_message(
    redis_env: dict[str, str], extra: dict[str, str], message: str
) -> None:
    env = exporter_env(redis_env, ARQSCALE_EXPORTER_PORT=str(free_port()), **extra)
    out = subprocess.run(
        [sys.executable, "-m", "arqscale", "exporter"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


async def test_metrics_api_can_be_switched_off(redis_env: dict[str, str], tmp_path: Path) -> None:
    http_port, api_port = free_port(), free_port()
    env = exporter_env(
        redis_env,
        ARQSCALE_EXPORTER_PORT=str(http_port),
        ARQSCALE_METRICS_API_PORT=str(api_port),
        ARQSCALE_METRICS_API_ENABLED="false",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "arqscale", "exporter", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await up(proc, f"http://127.0.0.1:{http_port}/readyz")
        status, text = await get(f"http://127.0.0.1:{http_port}/metrics")
        assert status == 200 and "arqscale_exporter_redis_up 1" in text
        with pytest.raises(OSError):  # nothing listens on the metrics API port
            await get(f"https://127.0.0.1:{api_port}/apis", ssl=False)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert "external metrics API" not in err.decode()


def test_port_in_use_is_reported(redis_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = exporter_env(redis_env, ARQSCALE_EXPORTER_PORT=str(port), ARQSCALE_METRICS_API_ENABLED="false")
        out = subprocess.run(
            [sys.executable, "-m", "arqscale", "exporter"], env=env, capture_output=True, text=True, timeout=60
        )
    assert out.returncode == 1, out.stderr
    assert "cannot serve" in out.stderr and "Traceback" not in out.stderr


async def test_client_ca_under_the_production_event_loop(redis_env: dict[str, str], tmp_path: Path) -> None:
    """The CLI runs on uvloop: the peer certificate must reach the handler there too."""
    ca = issue("front-proxy-ca", is_ca=True)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    cert, key = issue("front-proxy-client", issuer=ca, client=True).write(tmp_path / "c.crt", tmp_path / "c.key")
    http_port, api_port = free_port(), free_port()
    env = exporter_env(
        redis_env,
        ARQSCALE_EXPORTER_PORT=str(http_port),
        ARQSCALE_METRICS_API_PORT=str(api_port),
        ARQSCALE_METRICS_API_CLIENT_CA_FILE=str(tmp_path / "ca.crt"),
        ARQSCALE_METRICS_API_ALLOWED_NAMES="front-proxy-client",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "arqscale", "exporter", env=env, stderr=asyncio.subprocess.PIPE
    )
    url = f"https://127.0.0.1:{api_port}/apis/external.metrics.k8s.io/v1beta1"
    try:
        await up(proc, f"http://127.0.0.1:{http_port}/readyz")
        plain = ssl.create_default_context()
        plain.check_hostname, plain.verify_mode = False, ssl.CERT_NONE
        with_cert = ssl.create_default_context()
        with_cert.check_hostname, with_cert.verify_mode = False, ssl.CERT_NONE
        with_cert.load_cert_chain(str(cert), str(key))
        assert (await get(url, ssl=plain))[0] == 401
        assert (await get(url, ssl=with_cert))[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert "client certificates required" in err.decode()


async def up(proc: asyncio.subprocess.Process, url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if (await get(url))[0] == 200:
                return
        except OSError:
            pass
        assert proc.returncode is None and time.monotonic() < deadline, "exporter did not come up"
        await asyncio.sleep(0.1)
