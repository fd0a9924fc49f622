"""The worker's job timeouts on one timer (``worker.deadlines``): calls past their deadline are cancelled, in order,
and a call that ended in time is never touched."""

from __future__ import annotations

import asyncio

from arqscale.worker.deadlines import Deadlines


async def _call(deadlines: Deadlines, job_id: str, seconds: float, outcome: dict[str, str]) -> None:
    task = asyncio.current_task()
    assert task is not None
    deadlines.start(job_id, task)
    try:
        await asyncio.sleep(seconds)
        outcome[job_id] = "done"
    except asyncio.CancelledError:
        outcome[job_id] = "cancelled"
    finally:
        if deadlines.end(job_id):
            task.uncancel()
            outcome[job_id] += " (deadline)"


async def test_calls_past_their_deadline_are_cancelled_and_the_rest_finish() -> None:
    deadlines = Deadlines(0.05)
    outcome: dict[str, str] = {}
    slow = asyncio.create_task(_call(deadlines, "slow", 10, outcome))
    await asyncio.sleep(0.02)
    quick = asyncio.create_task(_call(deadlines, "quick", 0.001, outcome))
    later_slow = asyncio.create_task(_call(deadlines, "later-slow", 10, outcome))
    await asyncio.wait_for(asyncio.gather(slow, quick, later_slow), 2)
    assert outcome == {"slow": "cancelled (deadline)", "quick": "done", "later-slow": "cancelled (deadline)"}
    assert not slow.cancelled() and slow.cancelling() == 0  # the try went on to its record
    deadlines.close()


async def test_the_timer_skips_calls_that_ended_and_rearms_for_the_next() -> None:
    deadlines = Deadlines(0.05)
    outcome: dict[str, str] = {}
    for i in range(50):  # many short calls first: their entries are gone when the timer fires
        await _call(deadlines, f"short-{i}", 0, outcome)
    await asyncio.sleep(0.03)
    await asyncio.wait_for(_call(deadlines, "long", 10, outcome), 2)
    assert outcome["long"] == "cancelled (deadline)"
    assert all(outcome[f"short-{i}"] == "done" for i in range(50))
    deadlines.close()


async def test_a_call_that_ends_before_its_deadline_is_not_reported_expired() -> None:
    deadlines = Deadlines(0.01)
    task = asyncio.current_task()
    assert task is not None
    deadlines.start("a", task)
    assert deadlines.end("a") is False
    await asyncio.sleep(0.03)  # the timer fires with nothing left to cancel
    assert task.cancelling() == 0
    deadlines.close()
