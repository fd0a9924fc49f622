"""How many worker processes serve each queue right now, from their heartbeats.

Each worker keeps its id in ``arqscale:<queue>:workers`` with a heartbeat expiry (ms) as score; a
crashed worker's entry simply ages out, so counting the entries not yet expired needs no cleanup.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from arqscale.core import scores
from arqscale.core.keys import QueueKeys
from arqscale.core.spec import QueueSpec


async def live_workers(redis: Redis, specs: Mapping[str, QueueSpec], now_ms: int | None = None) -> dict[str, int]:
    """Queue name -> live worker processes, in one pipelined round trip."""
    now = scores.now_ms() if now_ms is None else now_ms
    names = [name for name, spec in specs.items() if spec.backend == "arq"]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcount(QueueKeys.of(specs[name], redis).workers, f"({now}", "+inf")
        replies = await pipe.execute()
    return {name: int(n) for name, n in zip(names, replies, strict=True)}


# ---- who the live workers are (the dashboard's Workers view) ------------------------------------------
# Each worker also writes a small record, ``arqscale:<queue>:worker:<id>`` (JSON, about 200 bytes), with
# every heartbeat: one SET with an expiry of the heartbeat's ttl, so a crashed worker's record goes with
# its heartbeat entry. Cost: one command per worker per heartbeat (every lease_seconds / 3).


# Models built on first use (`defer_build`): a worker imports this module and never validates them (cold start).
class WorkerView(BaseModel):
    model_config = ConfigDict(defer_build=True)

    worker_id: str
    host: str | None = None
    pod: str | None = Field(default=None, description="POD_NAME, in Kubernetes")
    pid: int | None = None
    started_at: float | None = None
    running: int | None = Field(default=None, description="jobs running at the last heartbeat")
    concurrency: int | None = None
    heartbeat_at: float | None = Field(default=None, description="the last heartbeat, epoch seconds")
    expires_at: float = Field(description="when its heartbeat runs out, unless renewed")


class WorkerList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    queue: str
    workers: list[WorkerView]


async def describe(redis: Redis, keys: QueueKeys, worker_id: str, record: Mapping[str, Any], ttl_ms: int) -> None:
    """Write this worker's record (called with each heartbeat)."""
    body = {**record, "heartbeat_at": round(time.time(), 3)}
    await redis.set(keys.worker_record(worker_id), json.dumps(body, separators=(",", ":")), px=ttl_ms)


async def list_workers(redis: Redis, spec: QueueSpec, limit: int = 500) -> WorkerList:
    """The queue's live workers with their records, in two round trips (a worker without one: id only)."""
    k = QueueKeys.of(spec, redis)
    now = scores.now_ms()
    entries = await redis.zrangebyscore(k.workers, f"({now}", "+inf", start=0, num=limit, withscores=True)
    ids = [(m.decode(errors="replace") if isinstance(m, bytes) else str(m), s) for m, s in entries]
    raws = await redis.mget([k.worker_record(i) for i, _ in ids]) if ids else []
    views = []
    for (worker_id, expiry), raw in zip(ids, raws, strict=True):
        data: dict[str, Any] = {}
        if raw:
            with contextlib.suppress(ValueError):
                loaded = json.loads(raw)
                data = loaded if isinstance(loaded, dict) else {}
        try:
            view = WorkerView.model_validate({**data, "worker_id": worker_id, "expires_at": expiry / 1000})
        except ValidationError:  # a record written by something else: show the id alone
            view = WorkerView(worker_id=worker_id, expires_at=expiry / 1000)
        views.append(view)
    return WorkerList(queue=spec.name, workers=views)
