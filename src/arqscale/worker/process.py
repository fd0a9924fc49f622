"""One worker process: Redis clients, the probe/metrics server, signal handlers and the worker, wired together."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Mapping

from arqscale.core import tracing
from arqscale.core.config import Config
from arqscale.core.connection import create_redis, create_sync_redis
from arqscale.core.spec import QueueSpec
from arqscale.worker.loop import TaskFunction, Worker
from arqscale.worker.metrics import WorkerMetrics
from arqscale.worker.probes import Health, build_app, listening_port, start_server

logger = logging.getLogger("arqscale.worker")

# A Redis call that hangs (network partition, not a refused connection) must fail, not stall the loop's
# pickups and completions forever; the slowest call is one pickup or finish script.
REDIS_SOCKET_TIMEOUT = 5.0
# SIGTERMs this close together are one stop request, not "drain" then "cut now": a parent-death signal
# (PR_SET_PDEATHSIG, as `arqscale demo` sets) arrives once per thread of the dying parent, since Linux
# hands the child to each remaining thread in turn. A second Ctrl-C (SIGINT) always counts.
SIGTERM_REPEAT_SECONDS = 1.0


def stop_signal_handler(
    request_drain: Callable[[], None], clock: Callable[[], float] = time.monotonic
) -> Callable[[int], None]:
    """The handler for SIGTERM/SIGINT: ``request_drain`` per stop request (the first drains, the next cuts)."""
    last_term: float | None = None

    def on_signal(sig: int) -> None:
        nonlocal last_term
        if sig == signal.SIGTERM:
            now = clock()
            repeat = last_term is not None and now - last_term < SIGTERM_REPEAT_SECONDS
            last_term = now
            if repeat:
                logger.info("SIGTERM again within %gs: the same stop request", SIGTERM_REPEAT_SECONDS)
                return
        request_drain()

    return on_signal


def worker_id(queue: str) -> str:
    """Pod name in Kubernetes (what `kubectl` shows), else host and pid; a suffix keeps restarts apart."""
    base = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{uuid.uuid4().hex[:6]}"


async def serve(
    config: Config,
    spec: QueueSpec,
    functions: Mapping[str, TaskFunction],
    *,
    port: int,
    port_chosen: bool = True,
    drain_timeout: float | None = None,
    traced: bool = False,
) -> int:
    redis = create_redis(config.redis, socket_timeout=REDIS_SOCKET_TIMEOUT)
    # The loop watchdog reports a blocked loop from its own thread, so it needs a client of its own.
    reporter = create_sync_redis(config.redis, socket_timeout=REDIS_SOCKET_TIMEOUT)
    metrics = WorkerMetrics(spec.name, spec.concurrency)
    health = Health(redis_unreachable_seconds=config.settings.redis_unreachable_seconds)
    patcher = None
    if os.environ.get("POD_NAME"):  # the kubernetes client costs 0.2 s of start-up: only load it in a pod
        from arqscale.worker import deletion_cost

        patcher = deletion_cost.from_environment()
    worker = Worker(
        spec,
        redis,
        functions=functions,
        worker_id=worker_id(spec.name),
        metrics=metrics,
        health=health,
        drain_timeout=drain_timeout,
        deletion_cost=patcher,
        blocked_reporter=reporter,
        traced=traced,
    )
    loop = asyncio.get_running_loop()
    on_signal = stop_signal_handler(worker.request_drain)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    host = config.settings.worker_host
    try:
        runner = await start_server(build_app(health, metrics), host, port, any_port_if_taken=not port_chosen)
    except OSError as exc:
        hint = " (choose another with --port or ARQSCALE_WORKER_PORT)" if exc.errno == errno.EADDRINUSE else ""
        logger.error("cannot serve probes on %s:%d: %s%s", host, port, exc.strerror or exc, hint)
        await redis.aclose()
        reporter.close()
        return 1
    asked, port = port, listening_port(runner) or port
    if port != asked and asked != 0:
        logger.warning(
            "port %d is taken (another worker on this machine?): probes on :%d instead; "
            "set --port or ARQSCALE_WORKER_PORT to choose one",
            asked,
            port,
        )
    logger.info(
        "worker %s: queue %s (%s), concurrency %d, redis %s, probes on :%d",
        worker.worker_id,
        spec.name,
        spec.queue_key,
        spec.concurrency,
        config.redis.display_url(),
        port,
    )
    try:
        await worker.run()
    finally:
        await runner.cleanup()
        if patcher is not None:
            await patcher.close()
        await redis.aclose()
        reporter.close()
        if traced:
            tracing.shutdown()  # flush the spans of the last tries
    return 0
