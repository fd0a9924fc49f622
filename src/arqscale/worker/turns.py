"""Who may talk to Redis when: pickup round trips overlap each other, the heartbeat goes alone.

A heartbeat is built from a snapshot of the jobs this worker holds (running, or finished with the outcome not
written yet). A finish written between the snapshot and the heartbeat's arrival would make the heartbeat report
that job's lease as lost, and a pickup in flight holds jobs the snapshot cannot name yet. So the heartbeat waits
for the round trips in flight to come back and holds new ones off meanwhile (it is one short call every
``lease_seconds / 3``); pickups only wait for a heartbeat, never for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable


class Turns:
    """A shared/exclusive gate for one event loop; a waiting exclusive turn goes before new shared ones.

    Leaving a turn never awaits: a round trip's jobs start right after it, with no other task in between.
    """

    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0
        self._released = asyncio.Event()  # set when a turn ends (or a waiter gives up): waiters look again

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        await self._until(lambda: not self._exclusive and not self._exclusive_waiting)
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            if self._shared == 0:
                self._released.set()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        self._exclusive_waiting += 1
        try:
            await self._until(lambda: not self._exclusive and self._shared == 0)
        finally:
            self._exclusive_waiting -= 1
            self._released.set()  # shared turns held off for this one may look again (even if it gave up)
        self._exclusive = True
        try:
            yield
        finally:
            self._exclusive = False
            self._released.set()

    @property
    def busy(self) -> bool:
        """Whether any turn is held."""
        return self._exclusive or self._shared > 0

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._released.clear()
            await self._released.wait()
