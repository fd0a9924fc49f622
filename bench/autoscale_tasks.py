"""Tasks for bench/autoscale_signals.py: each records when it was enqueued, started and finished.

``work(enqueued_at, seconds, kind)`` sleeps ``seconds`` (the service time; a sleep, so the two cores
are not what limits a worker) and pushes ``{"kind", "enq", "start", "end"}`` onto ``bench:as:done``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

DONE_KEY = "bench:as:done"


async def work(ctx: dict[str, Any], enqueued_at: float, seconds: float, kind: str) -> None:
    started = time.time()
    await asyncio.sleep(seconds)
    line = {"kind": kind, "enq": enqueued_at, "start": started, "end": time.time(), "job": ctx["job_id"]}
    await ctx["redis"].rpush(DONE_KEY, json.dumps(line))
