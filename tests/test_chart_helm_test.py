"""The chart's `helm test` check, run here against a real redis-server and a real exporter process.

The script the test pod runs is taken from the rendered Pod, with the Pod's own environment (only the
Redis and exporter addresses point at loopback), so what passes here is what runs in the cluster,
minus the External Metrics API call (no API server here; tests/test_chart.py checks its wiring).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from chart_support import by_kind, ensure_tools, env_of, render
from redis_server import RedisServer, free_port


@pytest.fixture(scope="module")
def exporter(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    ensure_tools()
    docs = render("helm3", "keda")
    (configmap,) = by_kind(docs, "ConfigMap")
    queues_file = tmp_path_factory.mktemp("queues") / "queues.yaml"
    queues_file.write_text(configmap["data"]["queues.yaml"])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {"REDIS_URL": redis_server.url, "ARQSCALE_QUEUES_FILE": str(queues_file)}
    cmd = [sys.executable, "-m", "arqscale", "exporter", "--port", str(port), "--no-metrics-api"]
    log = tmp_path_factory.mktemp("exporter") / "stderr.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "exporter not ready in 30 s"
            time.sleep(0.2)
        yield url, sorted(yaml.safe_load(queues_file.read_text())["queues"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _pod_script_and_env(values: str) -> tuple[str, dict[str, str]]:
    (pod,) = by_kind(render("helm3", values), "Pod")
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    env = {name: e["value"] for name, e in env_of(container).items() if "value" in e}
    return container["args"][0], env


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    return subprocess.run(
        [sys.executable, "-c", script], env=base | env, capture_output=True, text=True, timeout=60, check=False
    )


def test_helm_test_script_passes_against_real_redis_and_exporter(
    redis_server: RedisServer, exporter: tuple[str, list[str]]
) -> None:
    url, queues = exporter
    script, env = _pod_script_and_env("keda")
    assert env["KEDA"] == "true" and env["METRICS_API"] == "false"
    env |= {"EXPORTER_URL": url, "REDIS_URL": redis_server.url}
    result = _run(script, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   redis PING" in result.stdout
    for queue in queues:
        assert f"ok   exporter /keda/v1/queues/{queue}" in result.stdout


def test_helm_test_script_fails_when_redis_is_unreachable(exporter: tuple[str, list[str]]) -> None:
    url, _ = exporter
    script, env = _pod_script_and_env("keda")
    env |= {"EXPORTER_URL": url, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = _run(script, env)
    assert result.returncode != 0


def test_helm_test_script_fails_when_the_exporter_is_unreachable(redis_server: RedisServer) -> None:
    script, env = _pod_script_and_env("keda")
    env |= {"EXPORTER_URL": f"http://127.0.0.1:{free_port()}", "REDIS_URL": redis_server.url}
    result = _run(script, env)
    assert result.returncode != 0
    assert "ok   redis PING" in result.stdout
