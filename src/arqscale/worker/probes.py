"""The worker's one HTTP port: ``/livez``, ``/readyz`` and ``/metrics`` (aiohttp, on the worker's own loop).

Serving the probes from the worker's event loop is deliberate: when a task blocks the loop, /livez
cannot answer, the kubelet's probe times out and the pod is restarted. A probe served from a
thread would keep answering and hide the problem.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from arqscale.worker.metrics import WorkerMetrics


@dataclass
class Health:
    """What the probes report. Written by the worker loop, read by the handlers (same thread)."""

    redis_unreachable_seconds: float
    draining: bool = False
    started: bool = False
    redis_down_since: float | None = field(default=None)  # monotonic time of the first failure in a row
    last_redis_error: str | None = None

    def redis_failed(self, error: BaseException) -> None:
        if self.redis_down_since is None:
            self.redis_down_since = time.monotonic()
        self.last_redis_error = f"{type(error).__name__}: {error}"

    def redis_ok(self) -> None:
        self.redis_down_since = None

    def redis_down_for(self) -> float:
        return 0.0 if self.redis_down_since is None else time.monotonic() - self.redis_down_since

    def live(self) -> tuple[bool, str]:
        down = self.redis_down_for()
        if down > self.redis_unreachable_seconds:
            return False, f"redis unreachable for {down:.0f}s ({self.last_redis_error})"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.started:
            return False, "starting"
        if self.redis_down_since is not None:
            return False, f"redis unreachable ({self.last_redis_error})"
        return True, "ok"


def build_app(health: Health, metrics: WorkerMetrics) -> web.Application:
    async def livez(_: web.Request) -> web.Response:
        ok, why = health.live()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def readyz(_: web.Request) -> web.Response:
        ok, why = health.ready()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def metrics_handler(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app


async def start_server(app: web.Application, host: str, port: int, *, any_port_if_taken: bool = False) -> web.AppRunner:
    """Serve ``app`` on ``port``, or on a free port when that one is taken and ``any_port_if_taken``."""
    # No access log: kubelet probes every few seconds would drown the job log lines.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            if not any_port_if_taken or exc.errno != errno.EADDRINUSE:
                raise
            await web.TCPSite(runner, host, 0).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def listening_port(runner: web.AppRunner) -> int | None:
    """The port ``runner`` listens on (not the one asked for when that was taken or 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
