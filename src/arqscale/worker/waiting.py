"""Waiting in the worker's background loops, so that a cancellation always ends them.

The worker's shutdown cancels its background loops and waits for them. A loop that loses its cancellation runs
on, and the shutdown never ends (the process ignores SIGTERM until it is killed). Two ways it got lost:

- ``asyncio.wait_for(event.wait(), t)`` on Python 3.11 returns normally when the task is cancelled in the same
  loop pass as the event is set (it sees the inner wait done and drops the cancellation). ``wait_set`` uses
  ``asyncio.timeout``, which counts cancellations and lets an outside one through.
- redis-py's asyncio client sometimes returns a command's reply normally although its task was cancelled while it
  waited (reproduced with 5.x: the scheduler's first look, pipelined scripts, cancelled by a SIGTERM right after
  the first job; upstream reports: redis/redis-py#2028, #2551). The task still counts the request
  (``Task.cancelling()``): ``check_cancelled`` raises it again, and every background loop calls it each round
  (``wait_set`` does too).
"""

from __future__ import annotations

import asyncio


def check_cancelled() -> None:
    """Raise ``CancelledError`` when this task was asked to stop and something below swallowed the request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Until ``event`` is set (True) or ``seconds`` have passed (False)."""
    check_cancelled()
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
