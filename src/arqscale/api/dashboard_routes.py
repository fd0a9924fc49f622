"""The API's routes the dashboard's charts need: a queue's last hour of samples, and Redis at a glance.

``GET /v1/queues/{queue}/history`` reads the samples ``arqscale.core.history`` keeps; ``GET /v1/redis`` is a
few fields of ``INFO``. The API process is also what writes the samples (``sample_history``): every
``STEP_SECONDS`` it reads every queue's counts, live workers and totals in three pipelined round trips and
records one sample per queue; several API replicas write one sample per window between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from redis.exceptions import RedisError

from arqscale.api.app import STATE, Handler, _json, _query_number, _spec
from arqscale.api.openapi import RedisInfo
from arqscale.core import event_stream, history
from arqscale.core.live_workers import live_workers

log = logging.getLogger("arqscale.api")


async def sample_once(app: web.Application, now: float | None = None) -> int:
    """Record this window's sample of every queue; how many were new (0 when another sampler was first)."""
    state = app[STATE]
    counts = await state.counts.read(state.specs)
    workers = await live_workers(state.redis, state.specs)
    totals = await event_stream.read_totals(state.redis, list(state.specs))
    return await history.record(state.redis, counts, workers, totals, now)


async def _sampler(app: web.Application) -> None:
    while True:
        # Sleep to the next window's start, so replicas sample at the same moments.
        await asyncio.sleep(history.STEP_SECONDS - time.time() % history.STEP_SECONDS + 0.05)
        try:
            await sample_once(app)
        except (RedisError, OSError) as exc:  # Redis away: a gap in the charts, not a dead API
            log.warning("history sample skipped: %s", exc)


async def sample_history(app: web.Application) -> AsyncIterator[None]:
    """An aiohttp cleanup context: the sampler runs while the application does."""
    task = asyncio.create_task(_sampler(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def queue_history(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    since = _query_number(request, "since_seconds", history.KEEP_SECONDS, 1, history.KEEP_SECONDS)
    assert since is not None
    return _json(await history.read(request.app[STATE].redis, spec.name, since))


_INFO_FIELDS = {
    "used_memory": "used_memory_bytes",
    "maxmemory": "maxmemory_bytes",
    "connected_clients": "connected_clients",
    "instantaneous_ops_per_sec": "commands_per_second",
    "redis_version": "version",
    "uptime_in_seconds": "uptime_seconds",
}


async def redis_info(request: web.Request) -> web.StreamResponse:
    info = await request.app[STATE].redis.info()
    values = {ours: info.get(theirs) for theirs, ours in _INFO_FIELDS.items()}
    values["version"] = str(values["version"] or "")
    return _json(RedisInfo.model_validate(values))


HANDLERS: dict[str, Handler] = {"queue_history": queue_history, "redis_info": redis_info}
