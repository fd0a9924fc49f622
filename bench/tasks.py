"""Benchmark tasks, shared by plain arq and arqscale workers (arq's task contract: ``async def f(ctx, ...)``).

Import path ``tasks.noop`` / ``tasks.stamp`` with ``bench/`` on ``PYTHONPATH``. Each task does the least
that lets the harness see it ran:

- ``noop`` marks the first job a process runs (one ``SET NX`` per process, not per job), so throughput is
  timed from the first pickup rather than from interpreter start.
- ``stamp`` pushes ``start - enqueued_at`` (seconds) onto a list: the pickup latency of that job.
- ``sleep`` is the I/O-bound load: it marks the first start as ``noop`` does, then awaits ``SLEEP_S``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

FIRST_KEY = "bench:first"
LATENCY_KEY = "bench:lat"
SLEEP_S = 0.05

_started = False


async def noop(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> None:
    global _started
    if not _started:
        _started = True
        await ctx["redis"].set(FIRST_KEY, repr(time.time()), nx=True)


async def stamp(ctx: dict[str, Any], enqueued_at: float) -> None:
    started = time.time()
    await ctx["redis"].rpush(LATENCY_KEY, repr(started - enqueued_at))


# ``e2e`` (bench/end_to_end.py): each job notes when its task ended, in the worker's memory; a flusher writes the
# notes to Redis every 50 ms, off the job's path, so recording costs the measured latency nothing.
E2E_KEY = "bench:e2e:done"
_e2e_done: list[str] = []
_e2e_flusher: asyncio.Task[None] | None = None


async def _e2e_flush(redis: Any) -> None:
    while True:
        await asyncio.sleep(0.05)
        if _e2e_done:
            batch = _e2e_done[:]
            del _e2e_done[: len(batch)]
            await redis.rpush(E2E_KEY, *batch)


async def e2e(ctx: dict[str, Any]) -> None:
    global _e2e_flusher
    _e2e_done.append(f"{ctx['job_id']} {time.time()!r}")
    if _e2e_flusher is None:
        _e2e_flusher = asyncio.get_running_loop().create_task(_e2e_flush(ctx["redis"]))


async def sleep(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> None:
    await noop(ctx)
    await asyncio.sleep(SLEEP_S)
