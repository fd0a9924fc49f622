"""``arqscale demo`` pointed at a Sentinel setup: it uses the configured primary (starts no Redis of its
own), its workers, API and exporter reach it through the sentinels, and no password shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from redis_server import free_port
from sentinel_servers import SentinelSetup


def test_demo_runs_through_the_sentinels(tmp_path: Path) -> None:
    setup = SentinelSetup(tmp_path / "sentinel", password="demo-data-pw", sentinel_password="demo-sentinel-pw")
    setup.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))} | setup.env()
        cmd = [
            sys.executable, "-m", "arqscale", "demo", "--jobs", "30", "--until-drained",
            "--demo-dir", str(tmp_path / "demo"), "--api-port", str(free_port()), "--exporter-port", str(free_port()),
        ]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-4000:]
        assert f"redis+sentinel://:***@{setup.sentinels}/mymaster/0" in output
        assert "30 jobs:" in output and " 0 lost" in output, output[-2000:]
        assert "demo-data-pw" not in output and "demo-sentinel-pw" not in output
        assert not (tmp_path / "demo" / "redis").exists()  # no private Redis started
        with redis.Redis(port=setup.primary.port, password=setup.password) as primary:
            assert primary.dbsize() > 0  # the demo's jobs are on the primary the sentinels name
    finally:
        setup.stop()
