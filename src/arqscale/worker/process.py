"""One worker process: Redis clients, the probe/metrics server, signal handlers and the worker, wired together."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping

from arqscale.core import connection, tracing
from arqscale.core.config import Config, topology_message
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
# The metrics are loaded (prometheus_client imported) once the first jobs are done, at most this long after the
# start (worker/metrics.py): the import would otherwise come before the first job.
METRICS_LOAD_MAX_DELAY = 1.0


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


async def _topology_problem(config: Config, worker: Worker) -> str | None:
    """``check_topology`` beside the first pickup rather than before it (cold start, bench/cold_start.py):
    on a problem, say it as every other command does and stop the worker.

    Nothing runs meanwhile on a topology that the check refuses: on a cluster node the pickup script's keys
    span hash slots (``CROSSSLOT``), and sentinels that know no such master, or seed nodes that are not
    cluster nodes, give the client no server to send it to."""
    try:
        problem = await connection.check_topology_on(config.redis, worker.redis)
    except Exception:
        worker.request_drain()
        raise
    if problem is not None:
        print(topology_message(config, problem), file=sys.stderr)
        worker.request_drain()
    return problem


async def _load_metrics(worker: Worker, metrics: WorkerMetrics) -> None:
    await worker.first_jobs_done(METRICS_LOAD_MAX_DELAY)
    metrics.load()


async def serve(
    config: Config,
    spec: QueueSpec,
    functions: Mapping[str, TaskFunction],
    *,
    port: int,
    port_chosen: bool = True,
    drain_timeout: float | None = None,
    traced: bool = False,
    check_topology: bool = False,
) -> int:
    """Run the worker until it has drained; the exit code. ``check_topology``: the config was loaded without
    it (``load_config_or_exit(topology=False)``), run it here, beside the first pickup; a problem exits 2."""
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
    # Created here, its first step runs once the first pickup is on its way.
    checking = asyncio.create_task(_topology_problem(config, worker)) if check_topology else None
    loading = asyncio.create_task(_load_metrics(worker, metrics))
    try:
        await worker.run()
    finally:
        loading.cancel()
        if checking is not None and not checking.done():
            checking.cancel()  # a stop before the check answered: its thread ends within its timeout
        await runner.cleanup()
        if patcher is not None:
            await patcher.close()
        await redis.aclose()
        reporter.close()
        if traced:
            tracing.shutdown()  # flush the spans of the last tries
    if checking is not None and not checking.cancelled() and checking.result() is not None:
        return 2
    return 0
