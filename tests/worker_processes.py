"""Real ``arqscale worker`` subprocesses for tests: start, probe, wait for, read back what they did."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from redis.asyncio import Redis

from redis_server import free_port

TESTS = Path(__file__).resolve().parent  # worker_tasks and the other task modules live here


class WorkerProcess:
    def __init__(self, env: dict[str, str], queue: str, log: Path, *args: str) -> None:
        self.port = free_port()
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "arqscale", "worker", "--queue", queue, "--port", str(self.port), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    async def probe(self, path: str, answer_within: float = 1.0) -> int | None:
        """HTTP status, or None when the worker does not answer within ``answer_within`` seconds."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=answer_within)) as http,
                http.get(self.url + path) as response,
            ):
                return response.status
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def ready(self, within: float = 15.0) -> WorkerProcess:
        deadline = time.monotonic() + within
        while await self.probe("/readyz") != 200:
            assert self.proc.poll() is None, f"worker exited with {self.proc.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, f"worker not ready:\n{self.output()}"
            await asyncio.sleep(0.05)
        return self

    async def exited(self, within: float) -> int:
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"worker still running:\n{self.output()}"
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


StartWorker = Callable[..., WorkerProcess]


def worker_starter(redis_env: dict[str, str], tmp_path: Path) -> tuple[StartWorker, list[WorkerProcess]]:
    """``start(queues, queue="q", *args, env=None)`` writes a queues file and starts a worker on it."""
    started: list[WorkerProcess] = []

    def start(queues: dict[str, Any], queue: str = "q", *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        qfile = tmp_path / "queues.yaml"
        qfile.write_text(yaml.safe_dump({"queues": queues}))
        full_env = {**redis_env, **(env or {}), "ARQSCALE_QUEUES_FILE": str(qfile)}
        full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS), full_env.get("PYTHONPATH", "")])
        w = WorkerProcess(full_env, queue, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(w)
        return w

    return start, started


def stop_all(started: list[WorkerProcess]) -> None:
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)


async def wait_until(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (value := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


async def runs(redis: Redis, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in await redis.lrange(f"runs:{job_id}", 0, -1)]


def stack_env(redis_env: Mapping[str, str], queues: Mapping[str, Any], workdir: Path, **extra: str) -> dict[str, str]:
    """An arqscale process' environment: this one's without REDIS_* and ARQSCALE_*, then ``redis_env`` (a
    Sentinel or Cluster setup's ``env()``), a queues file in ``workdir`` and the tests' modules importable."""
    qfile = workdir / "queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": dict(queues)}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    return (
        env
        | dict(redis_env)
        | {
            "ARQSCALE_QUEUES_FILE": str(qfile),
            "ARQSCALE_LOG_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
