"""arqscale's own processes pointed at a real Redis Cluster (``cluster_servers``): workers, the API and the
exporter as subprocesses with ``REDIS_CLUSTER_NODES``, started and stopped by the test that owns them,
plus the small readers the cluster tests share (job state through the API, the task ledger)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

from cluster_servers import RedisClusterSetup
from cluster_tasks import LEDGER_RUNS, LEDGER_TICKS
from redis_server import free_port
from worker_processes import WorkerProcess, stack_env

FUNCTIONS = ["cluster_tasks.work", "cluster_tasks.poison", "cluster_tasks.hold", "cluster_tasks.tick"]
END_STATES = {"completed", "dead"}


def queue_spec(**extra: Any) -> dict[str, Any]:
    """A queue of the cluster tests' tasks: quick retries, so a poison job is dead within a second."""
    return {
        "functions": FUNCTIONS,
        "concurrency": 8,
        "max_tries": 2,
        "backoff": {"strategy": "fixed", "delay": 0.1, "jitter": 0},
        **extra,
    }


def process_env(setup: RedisClusterSetup, queues: Mapping[str, Any], workdir: Path, **extra: str) -> dict[str, str]:
    """This process' environment without REDIS_* and ARQSCALE_*, pointed at the cluster, with a queues file."""
    return stack_env(setup.env(), queues, workdir, **extra)


def wait_ready(worker: WorkerProcess, within: float = 30.0) -> None:
    """Until the worker's /readyz answers 200 (blocking: for module-scoped fixtures)."""
    deadline = time.monotonic() + within
    while True:
        try:
            if requests.get(worker.url + "/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert worker.proc.poll() is None, f"worker exited with {worker.proc.returncode}:\n{worker.output()[-3000:]}"
        assert time.monotonic() < deadline, f"worker not ready:\n{worker.output()[-3000:]}"
        time.sleep(0.1)


@dataclass
class ExporterProcess:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_api_port: int
    log: Path

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def external_url(self, metric: str) -> str:
        return f"https://127.0.0.1:{self.metrics_api_port}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{metric}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def exporter_process(env: Mapping[str, str], log: Path, within: float = 30.0) -> Iterator[ExporterProcess]:
    port, metrics_api_port = free_port(), free_port()
    env = dict(env) | {
        "ARQSCALE_EXPORTER_HOST": "127.0.0.1",
        "ARQSCALE_EXPORTER_PORT": str(port),
        "ARQSCALE_METRICS_API_PORT": str(metrics_api_port),
        "ARQSCALE_EXPORTER_REFRESH_SECONDS": "0.2",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "arqscale", "exporter"], env=env, stdout=out, stderr=out)
    exporter = ExporterProcess(proc, port, metrics_api_port, log)
    try:
        deadline = time.monotonic() + within
        while True:
            try:
                if requests.get(exporter.metrics_url, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, f"exporter exited:\n{exporter.output()[-3000:]}"
            assert time.monotonic() < deadline, f"exporter not serving:\n{exporter.output()[-3000:]}"
            time.sleep(0.1)
        yield exporter
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def get_insecure(url: str, **kwargs: Any) -> requests.Response:
    """A GET to the exporter's External Metrics API (HTTPS with its self-signed certificate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        return requests.get(url, verify=False, timeout=5, **kwargs)


def cli(env: Mapping[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arqscale", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def job(api: str, job_id: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{api}/v1/jobs/{job_id}", timeout=5)
    return response.status_code, response.json()


def wait_for_states(api: str, job_ids: list[str], states: set[str], within: float) -> dict[str, dict[str, Any]]:
    """Polls the API until every job is in one of ``states``; returns each job's last view."""
    pending = set(job_ids)
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + within
    while pending:
        for job_id in sorted(pending):
            status, body = job(api, job_id)
            if status == 200 and body.get("state") in states:
                seen[job_id] = body
                pending.discard(job_id)
        if pending:
            assert time.monotonic() < deadline, f"not {states} within {within}s: {sorted(pending)[:10]}"
            time.sleep(0.1)
    return seen


def runs_per_job(setup: RedisClusterSetup) -> dict[str, int]:
    """How many times each ``work`` job started, from the ledger."""
    counts: dict[str, int] = {}
    with setup.client() as client:
        for line in client.lrange(LEDGER_RUNS, 0, -1):
            job_id = json.loads(line)["job"]
            counts[job_id] = counts.get(job_id, 0) + 1
    return counts


def ticks(setup: RedisClusterSetup) -> list[dict[str, Any]]:
    with setup.client() as client:
        return [json.loads(line) for line in client.lrange(LEDGER_TICKS, 0, -1)]
