"""Every query of the chart's Grafana dashboard, run by a real Prometheus scraping a real exporter and worker.

Prometheus (Debian package) scrapes the exporter (in this process) and an ``arqscale worker``
subprocess, both labelled ``namespace="work"`` as the chart's ServiceMonitor/PodMonitor would label
them. The worker completes, retries and dead-letters jobs; another queue only has jobs waiting. Each
panel query, with Grafana's variables filled in, must parse and return series: a renamed metric or a
typo in a label leaves a panel empty, and this test red.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from exporter_support import get, running_exporter
from redis_server import free_port
from worker_processes import StartWorker, WorkerProcess, stop_all, worker_starter

ROOT = Path(__file__).resolve().parent.parent.parent
DASHBOARD = ROOT / "helm" / "arqscale" / "files" / "grafana-dashboard.json"
ROWS = ["Depth", "Throughput", "Latency", "Failures", "Workers and replicas"]
QUEUES: dict[str, Any] = {
    "busy": {
        "functions": ["worker_tasks.noop", "worker_tasks.fail"],
        "max_tries": 2,
        "backoff": {"strategy": "fixed", "delay": 0, "jitter": 0},
    },
    "idle_backlog": {"functions": ["worker_tasks.noop"]},
}
# What Grafana puts in place of the variables: the namespace, every queue, a rate window.
VARIABLES = {"$namespace": "work", "$queue": ".*", "$__rate_interval": "1m"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries() -> list[tuple[str, str]]:
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def fill(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


@pytest.fixture
def start_worker(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


def test_one_row_per_concern_and_a_sidecar_friendly_json() -> None:
    dash = dashboard()
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ROWS
    assert dash["uid"] == "arqscale-queues"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "queue"}
    # Every panel reads the chosen datasource, not one named in someone's Grafana.
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    exprs = [e for _, e in panel_queries()]
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(e.startswith(f"histogram_quantile({quantile}, ") and "job_duration" in e for e in exprs)


async def query(port: int, promql: str) -> dict[str, Any]:
    status, body = await get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql})
    answer: dict[str, Any] = json.loads(body)
    assert status == 200 and answer["status"] == "success", f"{promql}: {body}"
    return answer


async def queries_without_data(prom_port: int, queries: list[tuple[str, str]], within: float) -> list[str]:
    """Panel queries that still return no series once ``within`` seconds have passed."""
    empty: list[str] = []
    deadline = time.monotonic() + within
    for title, expr in queries:
        while not (await query(prom_port, fill(expr)))["data"]["result"]:
            if time.monotonic() > deadline:
                empty.append(f"{title}: {expr}")
                break
            await asyncio.sleep(0.5)
    return empty


async def test_every_dashboard_query_returns_series(
    redis: Redis, redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    specs = parse_queues({"queues": QUEUES})
    worker: WorkerProcess = await start_worker(QUEUES, "busy").ready()
    async with running_exporter(redis_url, specs) as exp:
        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: arqscale-exporter\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{exp.http_port}'], labels: {{namespace: work}}}}]\n"
            "  - job_name: arqscale-worker\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{worker.port}'], labels: {{namespace: work}}}}]\n"
        )
        log = tmp_path / "prometheus.log"
        prometheus = shutil.which("prometheus")
        assert prometheus, "prometheus is missing: `apt-get install -y prometheus` (see shared/TOOLS.md)"
        with log.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file,
            )
        try:
            # Both targets scraped once before any job runs, so the counters' rates see every job.
            deadline = time.monotonic() + 60
            while True:
                assert proc.returncode is None, log.read_text()[-2000:]
                try:
                    up = (await query(prom_port, "up == 1"))["data"]["result"]
                except OSError:
                    up = []
                if len(up) == 2:
                    break
                assert time.monotonic() < deadline, f"targets not up: {up}"
                await asyncio.sleep(0.5)
            producer = Producer(redis, specs)
            for i in range(20):
                await producer.enqueue("busy", "noop", job_id=f"ok{i}")
            for i in range(3):
                await producer.enqueue("busy", "fail", "boom", job_id=f"bad{i}")
            for i in range(4):
                await producer.enqueue("idle_backlog", "noop", job_id=f"wait{i}")

            # The variables' own queries.
            status, body = await get(
                f"http://127.0.0.1:{prom_port}/api/v1/label/namespace/values",
                params={"match[]": "bullmq_queue_waiting"},
            )
            assert status == 200 and json.loads(body)["data"] == ["work"]
            status, body = await get(
                f"http://127.0.0.1:{prom_port}/api/v1/label/queue/values",
                params={"match[]": 'bullmq_queue_waiting{namespace="work"}'},
            )
            assert json.loads(body)["data"] == sorted(QUEUES)

            queries = panel_queries()
            assert len(queries) >= 15
            empty = await queries_without_data(prom_port, queries, within=60)
            assert not empty, "panels without data:\n" + "\n".join(empty)

            # The numbers mean what the panels say: 3 dead jobs in the store, 4 waiting on the idle queue,
            # and 6 of 26 finished tries failed (20 complete, 3 retried, 3 dead).
            async def value(promql: str, want: float) -> float:
                end = time.monotonic() + 30
                while True:
                    result = (await query(prom_port, promql))["data"]["result"]
                    got = float(result[0]["value"][1]) if result else float("nan")
                    if got == want or time.monotonic() > end:
                        return got
                    await asyncio.sleep(0.5)

            assert await value('max by (queue) (bullmq_queue_failed{namespace="work",queue="busy"})', 3) == 3
            assert await value('max by (queue) (bullmq_queue_waiting{queue="idle_backlog"})', 4) == 4
            total = 'sum(increase(arqscale_worker_jobs_total{outcome=~"complete|retried|dead"}[5m]))'
            assert round(await value(f"round({total})", 26)) == 26
            ratio_expr = next(e for t, e in queries if t.startswith("Failure rate"))
            [ratio] = (await query(prom_port, fill(ratio_expr).replace("[1m]", "[5m]")))["data"]["result"]
            assert abs(float(ratio["value"][1]) - 6 / 26) < 0.01, ratio
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
