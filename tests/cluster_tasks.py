"""Task functions for the Redis Cluster tests. What they record goes under the ``{ledger}`` hash tag (one
slot, so one shard the failover test leaves alone), never next to the queue's own keys.

``{ledger}:runs``: one JSON line per start of a ``work`` job: {job, try, at}.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

LEDGER_RUNS = "{ledger}:runs"
LEDGER_TICKS = "{ledger}:ticks"
POISON = "{ledger}:poison"  # while set, ``poison`` jobs fail


def hold_key(flag: str) -> str:
    return "{ledger}:hold:" + flag


async def work(ctx: dict[str, Any], n: int, seconds: float = 0.0) -> int:
    await ctx["redis"].rpush(LEDGER_RUNS, json.dumps({"job": ctx["job_id"], "try": ctx["job_try"], "at": time.time()}))
    if seconds:
        await asyncio.sleep(seconds)
    return n * 2


async def poison(ctx: dict[str, Any]) -> str:
    if await ctx["redis"].exists(POISON):
        raise ValueError("poisoned")
    return "cured"


async def hold(ctx: dict[str, Any], flag: str) -> str:
    """Runs until the test deletes ``hold_key(flag)``: a job that stays active as long as the test wants."""
    while await ctx["redis"].exists(hold_key(flag)):  # noqa: ASYNC110 - the flag is in Redis, set by another process
        await asyncio.sleep(0.05)
    return "released"


async def tick(ctx: dict[str, Any], label: str) -> None:
    await ctx["redis"].rpush(LEDGER_TICKS, json.dumps({"label": label, "job": ctx["job_id"], "at": time.time()}))
