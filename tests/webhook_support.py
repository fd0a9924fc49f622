"""A real HTTP receiver on loopback that verifies every webhook with the Standard Webhooks reference library,
events written the way the workers write them, and a deliverer run in-process or as a subprocess."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from arqscale.core.events import events_key
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.webhooks.addresses import parse_networks
from arqscale.webhooks.deliverer import Deliverer, DelivererOptions
from redis_server import free_port

TESTS = Path(__file__).resolve().parent
SECRET = "whsec_" + base64.b64encode(b"endpoint-secret-canary-0123456789ab").decode()
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"callback-secret-canary-0123456789ab").decode()
SECRET_ENV = {"TEST_WHSEC": SECRET, "TEST_WHSEC_CB": CALLBACK_SECRET}


@dataclass
class Received:
    path: str
    id: str
    body: dict[str, Any]


@dataclass
class Receiver:
    """Answers 500 to the first ``fail_first[path]`` requests of each webhook id, and ``status`` after that."""

    port: int = field(default_factory=free_port)
    fail_first: dict[str, int] = field(default_factory=dict)
    delay: float = 0.0
    status: int = 200
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    tries: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path.strip("/")
        body = await request.read()
        secret = CALLBACK_SECRET if path.startswith("cb") else SECRET
        try:
            # The reference library checks the signature and that the timestamp is recent.
            payload = Webhook(secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.rejected.append(f"{path}: {exc}")
            return web.Response(status=400)
        msg_id = request.headers["webhook-id"]
        self.tries[msg_id] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.tries[msg_id] <= self.fail_first.get(path, 0):
            return web.Response(status=500)
        if self.status != 200:
            return web.Response(status=self.status)
        self.received.append(Received(path, msg_id, payload))
        return web.Response(status=204)

    def ids(self, path: str | None = None) -> set[str]:
        return {r.id for r in self.received if path is None or r.path == path}

    def by_id(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = defaultdict(list)
        for r in self.received:
            out[r.id].append(r)
        return out


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/{path:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", receiver.port)
    await site.start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


def hooks_queue(receiver: Receiver, **settings: Any) -> dict[str, Any]:
    """A queue whose ``main`` endpoint gets its final events and whose jobs may carry callback URLs."""
    retry = {"max_attempts": 4, "initial_delay": 0.05, "max_delay": 0.2, "timeout_seconds": 2}
    webhooks = {
        "endpoints": {"main": {"url": receiver.url("main"), "secret_env": "TEST_WHSEC"}},
        "callbacks": {"secret_env": "TEST_WHSEC_CB"},
        "retry": retry,
    }
    webhooks.update(settings.pop("webhooks", {}))
    return {"q": {"functions": ["log_tasks.say"], "webhooks": webhooks, **settings}}


def specs_of(queues: dict[str, Any]) -> dict[str, QueueSpec]:
    return parse_queues({"queues": queues})


async def emit(redis: Redis, job: str, event: str = "completed", queue: str = "q", **extra: Any) -> str:
    """An event as the workers' scripts write it (docs/events.md)."""
    fields = {"event": event, "job": job, "at": int(time.time() * 1000), "try": 1, **extra}
    entry = await redis.xadd(events_key(queue), fields)
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def options(**overrides: Any) -> DelivererOptions:
    base: dict[str, Any] = {
        "consumer": "test",
        "allowed": parse_networks("127.0.0.0/8"),
        "claim_idle_seconds": 1.0,
        "poll_seconds": 0.05,
        "read_block_ms": 200,
        "drain_seconds": 2.0,
    }
    return DelivererOptions(**{**base, **overrides})


@asynccontextmanager
async def delivering(redis: Redis, specs: dict[str, QueueSpec], **overrides: Any) -> AsyncIterator[Deliverer]:
    deliverer = Deliverer(redis, specs, options(**overrides))
    task = asyncio.create_task(deliverer.run())
    try:
        await until(lambda: deliverer.health.started, "the deliverer to start")
        yield deliverer
    finally:
        deliverer.request_stop()
        await asyncio.wait_for(task, 20)


async def until(check: Any, what: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


STARTED: list[DelivererProcess] = []


def kill_started() -> None:
    while STARTED:
        proc = STARTED.pop().proc
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class DelivererProcess:
    """``arqscale webhooks`` as a subprocess (killed after the test by ``kill_started``)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        STARTED.append(self)
        self.port = free_port()
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "arqscale", "webhooks", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def probe(self, path: str) -> tuple[int, str] | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
                http.get(f"http://127.0.0.1:{self.port}{path}") as response,
            ):
                return response.status, await response.text()
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def ready(self) -> DelivererProcess:
        async def up() -> bool:
            assert self.proc.poll() is None, f"deliverer exited {self.proc.returncode}:\n{self.output()}"
            answer = await self.probe("/readyz")
            return answer is not None and answer[0] == 200

        await until(up, "the deliverer to be ready")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def process_env(redis_env: dict[str, str], tmp_path: Path, queues: dict[str, Any], **extra: str) -> dict[str, str]:
    qfile = tmp_path / "queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": queues}))
    env = {
        **redis_env,
        **SECRET_ENV,
        "ARQSCALE_QUEUES_FILE": str(qfile),
        "ARQSCALE_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
        "ARQSCALE_WEBHOOKS_CLAIM_IDLE_SECONDS": "1",
        "ARQSCALE_WEBHOOKS_CONSUMER": "deliverer-0",
        "ARQSCALE_LOG_LEVEL": "DEBUG",
        **extra,
    }
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(r.body)) for r in receiver.received]
