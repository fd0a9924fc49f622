"""The exporter process: one counts cache, two servers.

- HTTP on ``ARQSCALE_EXPORTER_PORT`` (9100): ``/metrics`` for Prometheus, ``/keda/v1/queues/{queue}``
  for KEDA, and the probes ``/livez`` and ``/readyz``.
- HTTPS on ``ARQSCALE_METRICS_API_PORT`` (6443) unless ``ARQSCALE_METRICS_API_ENABLED=false``: the
  External Metrics API for the HPA, with its own ``/healthz``, ``/livez`` and ``/readyz``. Its
  certificate, key and client CA are re-read every ``ARQSCALE_METRICS_API_TLS_RELOAD_SECONDS`` and
  served from the next handshake on when they changed (``tls_certs.ReloadingTLS``); it answers metric
  requests only for the namespaces in ``ARQSCALE_METRICS_API_NAMESPACES`` (all when empty).

Readiness deliberately ignores Redis: a pod that is not ready leaves the Service's endpoints, and
then neither Prometheus (which would miss ``arqscale_exporter_redis_up 0``) nor the kube-apiserver
(which would get no 503 and report the APIService as unavailable instead) could hear the outage.
Liveness fails only when the refresh loop itself is wedged; a restart would not bring Redis back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shutil
import signal
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

from arqscale.core.spec import QueueSpec
from arqscale.exporter.external_metrics import ExternalMetricsAPI
from arqscale.exporter.keda import ROUTE as KEDA_ROUTE
from arqscale.exporter.keda import KedaEndpoint
from arqscale.exporter.prom import CONTENT_TYPE, MetricsPage
from arqscale.exporter.snapshot import RedisUnavailable, SnapshotCache
from arqscale.exporter.tls_certs import ClientCertPolicy, ReloadingTLS, serving_pair

log = logging.getLogger("arqscale.exporter")
PLAIN_HEADERS = {"Content-Type": CONTENT_TYPE}
GZIP_HEADERS = {"Content-Type": CONTENT_TYPE, "Content-Encoding": "gzip"}


@dataclass(frozen=True, slots=True)
class ExporterOptions:
    host: str = "0.0.0.0"
    port: int = 9100
    refresh_seconds: float = 1.0
    api_enabled: bool = True
    api_host: str | None = None  # the HTTP host when None
    api_port: int = 6443
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    allowed_names: str = ""
    # Namespaces whose HPAs may read our counts; None: every namespace (the chart sets its own).
    namespaces: frozenset[str] | None = None
    tls_reload_seconds: float = 10.0


class Exporter:
    """Owns the cache, its refresh loop and both servers; ``start()``/``stop()`` for tests and the CLI."""

    def __init__(self, redis: Redis, specs: Mapping[str, QueueSpec], options: ExporterOptions) -> None:
        self.options = options
        self.cache = SnapshotCache(redis, specs, refresh_seconds=options.refresh_seconds)
        self.page = MetricsPage(self.cache)
        self.cache.on_refresh = self.page.update
        self.ready = False
        self._runners: list[web.AppRunner] = []
        self.http_port: int | None = None
        self.api_port: int | None = None
        self._generated_tls_dir: Path | None = None
        self.tls: ReloadingTLS | None = None
        self._tls_task: asyncio.Task[None] | None = None
        # /livez: the loop must have tried a refresh within this long (each try ends within its timeout).
        self._stale_after = max(30.0, 10 * options.refresh_seconds + self.cache.timeout_seconds)

    # -- HTTP handlers -------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        # Refreshes only if the loop fell behind (the hook re-renders the page); when Redis is down
        # the page already says redis_up 0.
        with contextlib.suppress(RedisUnavailable):
            await self.cache.get()
        if not self.page.rendered.is_set():
            await self.page.rendered.wait()
        body, gzipped = self.page.current
        if gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            # Prometheus asks for gzip; the page is compressed once per refresh, not per scrape.
            return web.Response(body=gzipped, headers=GZIP_HEADERS)
        return web.Response(body=body, headers=PLAIN_HEADERS)

    async def livez(self, request: web.Request) -> web.Response:
        if self.cache.loop_alive(self._stale_after):
            return web.Response(text="ok\n")
        return web.Response(text="refresh loop is not running\n", status=503)

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok\n")
        return web.Response(text="not ready\n", status=503)

    def http_app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/metrics", self.metrics),
                web.get("/livez", self.livez),
                web.get("/readyz", self.readyz),
                web.get(KEDA_ROUTE, KedaEndpoint(self.cache).handle),
            ]
        )
        return app

    def api_app(self) -> web.Application:
        app = web.Application()
        policy = ClientCertPolicy.from_settings(self.options.client_ca_file, self.options.allowed_names)
        app.add_routes(ExternalMetricsAPI(self.cache, policy, namespaces=self.options.namespaces).routes())
        app.add_routes(
            [web.get("/healthz", self.livez), web.get("/livez", self.livez), web.get("/readyz", self.readyz)]
        )
        return app

    def ssl_context(self) -> ssl.SSLContext:
        cert, key = serving_pair(self.options.cert_file, self.options.key_file)
        if self.options.cert_file is None:
            self._generated_tls_dir = cert.parent  # ours to delete: a private key must not outlive us
        self.tls = ReloadingTLS(cert, key, self.options.client_ca_file)
        return self.tls.context

    async def _follow_tls_files(self, tls: ReloadingTLS) -> None:
        while True:
            await asyncio.sleep(self.options.tls_reload_seconds)
            try:
                await asyncio.to_thread(tls.reload_if_changed)
            except Exception:  # never let a surprise end the loop: the old context keeps serving
                log.exception("reloading the metrics API TLS files failed")

    # -- life cycle ----------------------------------------------------------------------------------

    async def _serve(self, app: web.Application, host: str, port: int, ctx: ssl.SSLContext | None) -> int:
        # No access log: a scrape every few seconds per replica would drown everything else.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True)
        await site.start()
        bound = runner.addresses[-1]
        return int(bound[1])

    async def start(self) -> None:
        ctx = self.ssl_context() if self.options.api_enabled else None  # fail fast on bad TLS files
        self.cache.start()
        self.http_port = await self._serve(self.http_app(), self.options.host, self.options.port, None)
        log.info("exporter serving /metrics and /keda on %s:%d", self.options.host, self.http_port)
        if ctx is not None:
            host = self.options.api_host or self.options.host
            self.api_port = await self._serve(self.api_app(), host, self.options.api_port, ctx)
            mode = "client certificates required" if self.options.client_ca_file else "no client CA configured"
            log.info("external metrics API serving HTTPS on %s:%d (%s)", host, self.api_port, mode)
            if self.tls is not None and self.options.tls_reload_seconds > 0:
                self._tls_task = asyncio.get_running_loop().create_task(self._follow_tls_files(self.tls))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._tls_task is not None:
            self._tls_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tls_task
            self._tls_task = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.cache.stop()
        if self._generated_tls_dir is not None:
            shutil.rmtree(self._generated_tls_dir, ignore_errors=True)
            self._generated_tls_dir = None


async def serve(redis: Redis, specs: Mapping[str, QueueSpec], options: ExporterOptions) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly (exit code 0 for Kubernetes)."""
    exporter = Exporter(redis, specs, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await exporter.start()
    # Everything made at start-up (modules, the app, TLS, queue specs) lives as long as the process: out of the
    # cyclic collector's reach, a full collection no longer walks it. At 1,000 queues a refresh allocates enough
    # to trigger one every ~10 s, which held the event loop ~33 ms (and every request with it); after this, ~1 ms.
    gc.collect()
    gc.freeze()
    try:
        await stop.wait()
        log.info("exporter stopping")
    finally:
        await exporter.stop()
        await redis.aclose()
