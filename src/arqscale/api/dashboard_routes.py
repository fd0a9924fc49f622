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
from typing import Any

from aiohttp import web
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError

from arqscale.api.app import STATE, Handler, Problem, _job_id, _json, _query_int, _query_number, _spec, read_only
from arqscale.api.openapi import MAX_PURGE_AGE, CleanResponse, FieldError, PromoteResponse, RedisInfo, SessionView
from arqscale.core import connection, event_stream, history, job_actions, job_search, keys, scores
from arqscale.core.counts import CountsReader
from arqscale.core.dead_letters import DeadLetters
from arqscale.core.live_workers import list_workers, live_workers

log = logging.getLogger("arqscale.api")


async def sample_once(app: web.Application, now: float | None = None, redis: Redis | None = None) -> int:
    """Record this window's sample of every queue; how many were new (0 when another sampler was first)."""
    state = app[STATE]
    client = state.redis if redis is None else redis
    counts = await CountsReader(client).read(state.specs)
    workers = await live_workers(client, state.specs)
    totals = await event_stream.read_totals(client, list(state.specs))
    return await history.record(client, counts, workers, totals, now)


async def _sampler(app: web.Application, redis: Redis) -> None:
    while True:
        # Sleep to the next window's start, so replicas sample at the same moments.
        await asyncio.sleep(history.STEP_SECONDS - time.time() % history.STEP_SECONDS + 0.05)
        try:
            await sample_once(app, redis=redis)
        except (RedisError, OSError) as exc:  # Redis away: a gap in the charts, not a dead API
            log.warning("history sample skipped: %s", exc)


async def sample_history(app: web.Application) -> AsyncIterator[None]:
    """An aiohttp cleanup context: the sampler runs while the application does.

    It has its own connection: sharing the requests' pool, a sample waiting on a frozen Redis would hold
    the idle connection and make the next request open a new one, doubling its time to answer 503.
    """
    shared = app[STATE].redis
    if keys.is_cluster(shared):
        # A cluster client has no single pool to copy (one per node, each opening connections on demand):
        # the sampler shares it, and the application closes it.
        task = asyncio.create_task(_sampler(app, shared))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return
    pool = shared.connection_pool
    own = ConnectionPool(connection_class=pool.connection_class, max_connections=1, **pool.connection_kwargs)
    redis = Redis(connection_pool=own)
    task = asyncio.create_task(_sampler(app, redis))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await redis.aclose()
    await own.aclose()


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
    # On Redis Cluster: memory, clients and commands summed over the nodes; the shortest uptime.
    infos = await connection.info_per_node(request.app[STATE].redis, "default")
    values: dict[str, Any] = {}
    for theirs, ours in _INFO_FIELDS.items():
        found = [i[theirs] for i in infos if i.get(theirs) is not None]
        if ours == "version":
            values[ours] = str(found[0]) if found else ""
        elif ours == "uptime_seconds":
            values[ours] = min((int(v) for v in found), default=0)
        else:
            values[ours] = sum(int(v) for v in found)
    return _json(RedisInfo.model_validate(values))


async def session(request: web.Request) -> web.StreamResponse:
    return _json(SessionView(read_only=read_only(request, request.app[STATE])))


async def promote_job(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    job_id = _job_id(request)
    status = await state.statuses.read(job_id)
    if status.queue is None or status.queue not in state.specs:
        raise Problem(404, "not_found", f"no job {job_id!r}")
    outcome = await job_actions.promote(state.redis, state.specs[status.queue], job_id)
    if outcome is job_actions.PromoteOutcome.NOT_FOUND:
        raise Problem(404, "not_found", f"job {job_id!r} is not in its queue (finished, held or gone)")
    if outcome is job_actions.PromoteOutcome.NOT_DELAYED:
        raise Problem(409, "not_delayed", f"job {job_id!r} is not delayed: it is ready or running already")
    return _json(PromoteResponse(queue=status.queue, job_id=job_id, status="promoted"), 202)


async def clean_queue(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    redis = request.app[STATE].redis
    which = request.query.get("state", "")
    if which not in ("completed", "failed"):
        raise Problem(
            422,
            "validation_error",
            "invalid query parameter state: completed or failed",
            [FieldError(field="state", message="completed or failed")],
        )
    older = _query_number(request, "older_than_seconds", None, 0, MAX_PURGE_AGE)
    if older is None:
        raise Problem(
            422,
            "validation_error",
            "older_than_seconds is required",
            [FieldError(field="older_than_seconds", message="required: seconds since the job ended")],
        )
    limit = _query_int(request, "limit", job_actions.MAX_CLEAN, 1, job_actions.MAX_CLEAN)
    if which == "failed":  # failed jobs are the dead-letter store: its own purge, in batches
        deleted = await DeadLetters(redis, spec).purge(older_than_seconds=older)
        return _json(CleanResponse(queue=spec.name, state=which, deleted=deleted, more=False))
    # Redis' clock, to the millisecond: whole seconds would spare a job that ended earlier in this second.
    now_ms = scores.time_ms(*await redis.time())
    cleaned = await job_actions.clean_completed(redis, spec, now_ms - int(older * 1000), limit)
    return _json(CleanResponse(queue=spec.name, state=which, deleted=cleaned.deleted, more=cleaned.more))


async def search_jobs(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    state = request.app[STATE]
    which = request.query.get("state") or None
    if which is not None and which not in job_search.STATES:
        raise Problem(
            422,
            "validation_error",
            "invalid query parameter state",
            [FieldError(field="state", message="one of " + ", ".join(job_search.STATES))],
        )
    limit = _query_int(request, "limit", 50, 1, job_search.MAX_RESULTS)
    found = await job_search.search(
        state.redis,
        spec,
        state.statuses,
        prefix=request.query.get("prefix", ""),
        function=request.query.get("function") or None,
        state=which,
        limit=limit,
    )
    return _json(found)


async def queue_workers(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    return _json(await list_workers(request.app[STATE].redis, spec))


HANDLERS: dict[str, Handler] = {
    "queue_workers": queue_workers,
    "search_jobs": search_jobs,
    "queue_history": queue_history,
    "redis_info": redis_info,
    "session": session,
    "promote_job": promote_job,
    "clean_queue": clean_queue,
}
