"""The ``arqscale webhooks`` process: the deliverer, its probes and metrics, and its signals.

HTTP on ``ARQSCALE_WEBHOOKS_PORT`` (8090): ``/livez`` (fails once Redis has been unreachable for
``ARQSCALE_REDIS_UNREACHABLE_SECONDS``), ``/readyz`` (503 while starting, draining or cut off from Redis) and
``/metrics``. SIGTERM/SIGINT: no more reads, attempts under way get ``ARQSCALE_WEBHOOKS_DRAIN_SECONDS`` to
finish, the rest are handed back (another replica, or this one after a restart, sends them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from arqscale.core.config import Config
from arqscale.core.connection import create_redis
from arqscale.core.health import Health
from arqscale.webhooks.addresses import parse_networks
from arqscale.webhooks.deliverer import Deliverer, DelivererOptions, webhook_queues
from arqscale.webhooks.metrics import WebhookMetrics

logger = logging.getLogger("arqscale.webhooks")


def consumer_name(configured: str) -> str:
    """Stable across restarts of the same pod (its name), so a restarted deliverer reads its own pending
    entries at once instead of waiting for another to claim them."""
    return configured or os.environ.get("POD_NAME") or f"{socket.gethostname()}"


def build_app(health: Health, metrics: WebhookMetrics) -> web.Application:
    async def livez(_: web.Request) -> web.Response:
        ok, why = health.live()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def readyz(_: web.Request) -> web.Response:
        ok, why = health.ready()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def serve(config: Config, *, port: int | None = None) -> None:
    s = config.settings
    queues = webhook_queues(config.queues)
    options = DelivererOptions(
        consumer=consumer_name(s.webhooks_consumer),
        allowed=parse_networks(s.webhooks_allow_networks),
        concurrency=s.webhooks_concurrency,
        claim_idle_seconds=s.webhooks_claim_idle_seconds,
        drain_seconds=s.webhooks_drain_seconds,
    )
    metrics = WebhookMetrics()
    health = Health(redis_unreachable_seconds=s.redis_unreachable_seconds)
    redis = create_redis(config.redis)
    deliverer = Deliverer(redis, config.queues, options, metrics=metrics, health=health)
    runner = web.AppRunner(build_app(health, metrics), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, s.webhooks_host, port or s.webhooks_port)
    await site.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, deliverer.request_stop)
    logger.info(
        "webhook deliverer %s on port %d (Redis %s, queues: %s, allowed non-public networks: %s)",
        options.consumer,
        port or s.webhooks_port,
        config.redis.display_url(),
        ", ".join(sorted(queues)) or "none (no queue has webhooks)",
        ", ".join(str(n) for n in options.allowed) or "none",
    )
    try:
        await deliverer.run()
    finally:
        await runner.cleanup()
        with contextlib.suppress(Exception):
            await redis.aclose()
