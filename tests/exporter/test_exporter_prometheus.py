"""A real Prometheus (Debian package) scrapes the exporter, and a query returns the queue's count."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

from redis.asyncio import Redis

from arqscale.core.spec import QueueSpec
from arqscale.exporter.prom import GZIP_ABOVE
from exporter_support import EMAIL_EXPECTED, SPECS, get, running_exporter, seed_every_state
from redis_server import free_port


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError("prometheus is missing: `apt-get install -y prometheus` (see shared/TOOLS.md)")
    return path


async def query(port: int, promql: str) -> list[dict[str, object]]:
    status, body = await get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql})
    assert status == 200, body
    result: list[dict[str, object]] = json.loads(body)["data"]["result"]
    return result


async def test_prometheus_scrapes_and_queries(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    await seed_every_state(redis)
    # Enough idle queues to make the page large: then the exporter answers Prometheus gzipped.
    specs = {**SPECS, **{f"idle{i:03d}": QueueSpec(name=f"idle{i:03d}", functions=["t.m.f"]) for i in range(150)}}
    async with running_exporter(redis_url, specs) as exp:
        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: arqscale-exporter\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{exp.http_port}']}}]\n"
        )
        # Our own Prometheus: temp storage, loopback port, no Debian service involved.
        log = tmp_path / "prometheus.log"
        with log.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file,
            )
        try:
            deadline = time.monotonic() + 60
            result: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                assert proc.returncode is None, log.read_text()[-2000:]
                try:
                    result = await query(prom_port, 'bullmq_queue_waiting{queue="email"}')
                except OSError:
                    result = []  # not listening yet
                if result:
                    break
                await asyncio.sleep(0.5)
            assert result, 'Prometheus never had bullmq_queue_waiting{queue="email"}'
            [sample] = result
            assert sample["metric"]["job"] == "arqscale-exporter"  # type: ignore[index]
            assert float(sample["value"][1]) == EMAIL_EXPECTED["waiting"]  # type: ignore[index]
            # The same scrape carries every queue and the exporter's health.
            [held] = await query(prom_port, 'bullmq_queue_paused{queue="held"}')
            assert float(held["value"][1]) == 2  # type: ignore[index]
            [up] = await query(prom_port, "arqscale_exporter_redis_up")
            assert float(up["value"][1]) == 1  # type: ignore[index]
            [target_up] = await query(prom_port, 'up{job="arqscale-exporter"}')
            assert float(target_up["value"][1]) == 1  # type: ignore[index]
            [idle] = await query(prom_port, 'count(arqscale_queue_backlog{queue=~"idle[0-9]+"} == 0)')
            assert float(idle["value"][1]) == 150  # type: ignore[index]
            assert len(exp.page.body) > GZIP_ABOVE  # so the scrapes above were answered gzipped
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
