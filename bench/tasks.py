"""Benchmark tasks, shared by plain arq and arqscale workers (arq's task contract: ``async def f(ctx, ...)``).

Import path ``tasks.noop`` / ``tasks.stamp`` with ``bench/`` on ``PYTHONPATH``. Each task does the least
that lets the harness see it ran:

- ``noop`` marks the first job a process runs (one ``SET NX`` per process, not per job), so throughput is
  timed from the first pickup rather than from interpreter start.
- ``stamp`` pushes ``start - enqueued_at`` (seconds) onto a list: the pickup latency of that job.
"""

from __future__ import annotations

import time
from typing import Any

FIRST_KEY = "bench:first"
LATENCY_KEY = "bench:lat"

_started = False


async def noop(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> None:
    global _started
    if not _started:
        _started = True
        await ctx["redis"].set(FIRST_KEY, repr(time.time()), nx=True)


async def stamp(ctx: dict[str, Any], enqueued_at: float) -> None:
    started = time.time()
    await ctx["redis"].rpush(LATENCY_KEY, repr(started - enqueued_at))
