"""Task functions for the worker tests. Each records what happened in Redis, where the test reads it.

``runs:<job id>``: a list of JSON lines {try, worker, pid, at} — one per start of the job.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from arq.worker import Retry


async def _record(ctx: dict[str, Any], **extra: Any) -> None:
    line = {"try": ctx["job_try"], "worker": ctx["worker_id"], "pid": os.getpid(), "at": time.time(), **extra}
    await ctx["redis"].rpush(f"runs:{ctx['job_id']}", json.dumps(line))


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def add(ctx: dict[str, Any], a: int, b: int) -> int:
    await _record(ctx)
    return a + b


async def record(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> str:
    await _record(ctx)
    await ctx["redis"].rpush("order", ctx["job_id"])
    return "recorded"


async def sleep(ctx: dict[str, Any], seconds: float) -> str:
    await _record(ctx)
    # Count jobs in flight across the test, and the highest count seen.
    now = await ctx["redis"].incr("in_flight")
    await ctx["redis"].eval(
        "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
        "redis.call('SET', KEYS[1], ARGV[1]) end",
        1,
        "max_in_flight",
        now,
    )
    try:
        await asyncio.sleep(seconds)
    finally:
        await ctx["redis"].decr("in_flight")
    await ctx["redis"].rpush("finished", ctx["job_id"])
    return "slept"


async def fail(ctx: dict[str, Any], message: str = "boom") -> None:
    await _record(ctx)
    raise ValueError(message)


async def retry_later(ctx: dict[str, Any], seconds: float) -> None:
    await _record(ctx)
    raise Retry(defer=seconds)


async def block_loop(ctx: dict[str, Any], seconds: float) -> str:
    await _record(ctx)
    time.sleep(seconds)  # noqa: ASYNC251 - blocking the event loop is the point of this task
    return "blocked"


async def progress(ctx: dict[str, Any]) -> str:
    await ctx["progress"](50, message="half way")
    return "done"


async def stamp(ctx: dict[str, Any], hold: float = 0.0) -> None:
    """Records its start time (rate limit tests), then holds its slot for ``hold`` seconds."""
    await ctx["redis"].rpush("starts", json.dumps({"at": time.time(), "pid": os.getpid(), "id": ctx["job_id"]}))
    await asyncio.sleep(hold)


async def pause(ctx: dict[str, Any], seconds: float, log: str | None = None) -> str:
    """Touches no Redis itself: keeps running while Redis is down. Appends its job id to the file ``log``."""
    if log is not None:
        with open(log, "a") as out:  # noqa: ASYNC230 - one tiny local append; the test reads it afterwards
            out.write(ctx["job_id"] + "\n")
    await asyncio.sleep(seconds)
    return ctx["job_id"]


async def chain(ctx: dict[str, Any], a: int, b: int) -> str:
    """Enqueues a follow-up the arq way: onto the worker's own queue, with its serializer."""
    job = await ctx["redis"].enqueue_job("add", a, b, _job_id=f"{ctx['job_id']}-next")
    return job.job_id


async def fail_while(ctx: dict[str, Any], flag: str) -> str:
    """Fails while the Redis key ``flag`` exists, then succeeds: a job that works again once fixed."""
    await _record(ctx)
    if await ctx["redis"].exists(flag):
        raise ValueError(f"{flag} is set")
    return "recovered"


class StubbornError(Exception):
    """Its ``__init__`` takes two arguments: unpickling it (from ``args``, one string) fails."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")


async def fail_stubborn(ctx: dict[str, Any]) -> None:
    raise StubbornError(7, "no")


async def block_first_try(ctx: dict[str, Any], seconds: float) -> str:
    """Blocks its worker's event loop for ``seconds`` on the first try only (a stall: a GC pause, a
    partition), then returns which try finished; later tries return at once."""
    await _record(ctx)
    if ctx["job_try"] == 1:
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the event loop is the point of this task
    return f"try {ctx['job_try']}"


async def swallow_cancel(ctx: dict[str, Any], seconds: float) -> str:
    """Catches its cancellation and runs on (bad task code): records its start and what happened."""
    await _record(ctx)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        # Ignoring the cancellation is the point of this task: it runs on, saying so every 50 ms.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await ctx["redis"].rpush(f"swallowed:{ctx['job_id']}", json.dumps({"pid": os.getpid(), "at": time.time()}))
            await asyncio.sleep(0.05)
    return "stubborn"


async def clean_up_on_cancel(ctx: dict[str, Any], seconds: float) -> str:
    """Catches its cancellation to clean up, then lets it go on (what a well-behaved task does)."""
    await _record(ctx)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await ctx["redis"].rpush(f"cleaned:{ctx['job_id']}", "1")
        raise
    return "finished"


async def echo(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    """Returns its arguments: whatever a producer sent comes back as the job's result."""
    return {"args": list(args), "kwargs": kwargs}


async def nested_result(ctx: dict[str, Any], depth: int, leaf: str = "x") -> Any:
    """A result nested ``depth`` lists deep (deeper than pydantic's serializer goes, if asked)."""
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


async def fail_with(ctx: dict[str, Any], message: Any, *args: Any, **kwargs: Any) -> None:
    """Raises with any text at all in its message (and so in the traceback)."""
    raise ValueError(message)


async def keyed(ctx: dict[str, Any], seconds: float = 0.05, user_id: Any = None, hang_first: bool = False) -> str:
    """A job of a per-key-limited queue: counts its key's jobs in flight (``keyed:now:<key>``) and the highest
    count seen (``keyed:max:<key>``), and lists each start's Redis time under ``keyed:starts:<key>``. With
    ``hang_first`` the first try sleeps for a minute (a job a killed worker leaves behind)."""
    key = str(user_id)
    r = ctx["redis"]
    seconds_now, micros = await r.time()
    await r.rpush(f"keyed:starts:{key}", json.dumps({"id": ctx["job_id"], "at": seconds_now * 1000 + micros / 1000}))
    await _record(ctx)
    now = await r.incr(f"keyed:now:{key}")
    await r.eval(
        "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
        "redis.call('SET', KEYS[1], ARGV[1]) end",
        1,
        f"keyed:max:{key}",
        now,
    )
    try:
        await asyncio.sleep(60 if hang_first and ctx["job_try"] == 1 else seconds)
    finally:
        await r.decr(f"keyed:now:{key}")
    await r.rpush("keyed:done", ctx["job_id"])
    return key
