"""Tasks that write to their job's log (tests/worker/test_job_logs.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

app_log = logging.getLogger("app.tasks")


async def chatty(ctx: dict[str, Any], tag: str, n: int) -> str:
    """Writes ``n`` lines each way, yielding between them so concurrent jobs interleave in one process."""
    for i in range(n):
        await ctx["log"](f"{tag} ctx {i}")
        app_log.info("%s logging %d", tag, i)
        await asyncio.sleep(0.001 * (i % 3))
    # A thread started by the task runs in a copy of its context: its records are the job's too.
    await asyncio.to_thread(app_log.warning, "%s from a thread", tag)
    return tag


async def say(ctx: dict[str, Any], *texts: str) -> None:
    """Writes each text through ctx["log"] and through logging (the text as the format, then as an argument)."""
    for text in texts:
        await ctx["log"](text)
        app_log.info(text)  # a hostile format string: %s with no arguments, %(x)s, %
        app_log.info("arg: %s", text)
    app_log.debug("below the queue's level: not kept")


async def fail_once(ctx: dict[str, Any]) -> str:
    await ctx["log"](f"try {ctx['job_try']} starts")
    if ctx["job_try"] == 1:
        try:
            raise ValueError("first try fails")
        except ValueError:
            app_log.exception("caught, failing the try")
            raise
    return "ok"


async def die(ctx: dict[str, Any]) -> None:
    await ctx["log"]("about to fail for good")
    raise RuntimeError("no")
