"""The chart's `helm test` check, run here against a real redis-server and a real exporter process.

The script the test pod runs is taken from the rendered Pod, with the Pod's own environment (only the
Redis and exporter addresses point at loopback), so what passes here is what runs in the cluster,
minus the External Metrics API call (no API server here; tests/chart/test_chart.py checks its wiring).
The last test sends a real exporter exactly the External Metrics API request each rendered HPA
makes (metric name and label selector) and expects a value, not a 404.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from chart_support import NAMESPACE, by_kind, ensure_tools, env_of, render
from redis_server import RedisServer, free_port


class ExporterProcess:
    """`arqscale exporter` on loopback, reading the queues file a render's ConfigMap holds."""

    def __init__(self, redis_url: str, queues_yaml: str, workdir: Path, *, metrics_api: bool) -> None:
        self.queues_file = workdir / "queues.yaml"
        self.queues_file.write_text(queues_yaml)
        self.log = workdir / "stderr.log"
        self.port, self.api_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"https://127.0.0.1:{self.api_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
        env |= {"REDIS_URL": redis_url, "ARQSCALE_QUEUES_FILE": str(self.queues_file)}
        cmd = [sys.executable, "-m", "arqscale", "exporter", "--port", str(self.port)]
        cmd += ["--api-port", str(self.api_port)] if metrics_api else ["--no-metrics-api"]
        with self.log.open("wb") as stderr:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)

    @property
    def queues(self) -> list[str]:
        return sorted(yaml.safe_load(self.queues_file.read_text())["queues"])

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"exporter not ready in {timeout} s"
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _configmap_queues(values: str) -> str:
    (configmap,) = by_kind(render("helm3", values), "ConfigMap")
    text: str = configmap["data"]["queues.yaml"]
    return text


@pytest.fixture(scope="module")
def exporter(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    ensure_tools()
    proc = ExporterProcess(
        redis_server.url, _configmap_queues("keda"), tmp_path_factory.mktemp("exporter"), metrics_api=False
    )
    try:
        proc.wait_ready()
        yield proc.url, proc.queues
    finally:
        proc.stop()


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


@pytest.mark.parametrize("values", ["non-dns-queues", "all-on", "defaults"])
def test_every_hpa_query_is_answered_by_the_exporter(redis_server: RedisServer, tmp_path: Path, values: str) -> None:
    """Ask a real exporter exactly what each rendered HPA will ask the API server for."""
    ensure_tools()
    docs = render("helm3", values)
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpas
    proc = ExporterProcess(redis_server.url, _configmap_queues(values), tmp_path, metrics_api=True)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the exporter's self-signed certificate; the aggregator checks caBundle
    try:
        proc.wait_ready()
        for hpa in hpas:
            for metric in hpa["spec"]["metrics"]:
                name = metric["external"]["metric"]["name"]
                labels = metric["external"]["metric"]["selector"]["matchLabels"]
                selector = ",".join(f"{k}={v}" for k, v in labels.items())
                path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/{name}"
                url = f"{proc.api_url}{path}?labelSelector={urllib.parse.quote(selector)}"
                with urllib.request.urlopen(url, timeout=10, context=context) as response:
                    body = json.load(response)
                assert body["kind"] == "ExternalMetricValueList", body
                (item,) = body["items"]
                assert item["metricName"] == name
                assert item["metricLabels"] == labels
                assert re.fullmatch(r"\d+m?", item["value"]), item  # a quantity the HPA can divide
    finally:
        proc.stop()


def test_every_scaled_object_trigger_reads_a_number_from_the_exporter(exporter: tuple[str, list[str]]) -> None:
    """Fetch each rendered KEDA trigger's URL (in-cluster host swapped for loopback) and read its valueLocation."""
    url, _ = exporter
    scaled_objects = by_kind(render("helm3", "keda"), "ScaledObject")
    assert scaled_objects
    for so in scaled_objects:
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            parts = urllib.parse.urlsplit(meta["url"])
            with urllib.request.urlopen(url + parts.path, timeout=10) as response:
                body = json.load(response)
            value = body[meta["valueLocation"]]
            assert isinstance(value, int | float) and not isinstance(value, bool), (meta, body)
