"""The worker's schedule loop: every worker of a queue fires that queue's due schedule ticks.

No leader and no extra process: each worker wakes at the earliest stored tick, when a runtime write
publishes ``schedules.SCHEDULES_WAKE`` on the queue's wake channel (the worker's wake listener calls
``wake``), and at least every ``POLL_SECONDS`` (a wake missed while reconnecting), reads what is due, and
settles each due tick with one script that compare-and-sets the stored tick and enqueues the job
(``core.schedules.FIRE``).
Several workers waking for the same tick run the same script; the first one wins, the others' CAS fails
and they move on. The protocol is in docs/design.md, "Schedules".
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arqscale.core.spec import QueueSpec
from arqscale.worker.waiting import wait_set

if TYPE_CHECKING:
    from arqscale.core.schedules import ScheduleStore

logger = logging.getLogger("arqscale.worker.scheduler")

# The longest a worker sleeps between looks: what an idle worker pays for schedules (one script call per
# look; bench/schedule_cost.py), and how late a runtime change is seen when its wake message was missed.
POLL_SECONDS = 5.0
# Due ticks settled per script call; more are taken at once in the next round.
BATCH = 100
REDIS_RETRY_SECONDS = 1.0  # the worker's own loop reports outages; this one only waits them out
# The first look waits for the worker's first jobs (``after``), at most this long: importing the schedules module
# (with the producer's) and the first look would otherwise run beside the first pickup and delay the first job
# (cold start, bench/cold_start.py).
FIRST_LOOK_MAX_DELAY = 1.0


class Scheduler:
    def __init__(
        self, spec: QueueSpec, redis: Redis, *, poll_seconds: float = POLL_SECONDS, after: asyncio.Event | None = None
    ) -> None:
        self.spec = spec
        self._redis = redis
        self._store: ScheduleStore | None = None
        self._after = after
        self.poll_seconds = poll_seconds
        self.synced = False
        self.fired = 0  # jobs this worker enqueued (for tests and logs)
        self.looks = 0  # rounds of looking at what is due (for tests)
        self._random = random.Random()
        self._woken = asyncio.Event()

    @property
    def store(self) -> ScheduleStore:
        if self._store is None:
            from arqscale.core.schedules import ScheduleStore  # imported on first use: see FIRST_LOOK_MAX_DELAY

            self._store = ScheduleStore(self._redis, self.spec)
        return self._store

    def wake(self) -> None:
        """A schedule was created, changed or resumed: look at the stored ticks now, not after the sleep."""
        self._woken.set()

    async def run(self) -> None:
        """Forever (the worker cancels it): sync the declared schedules once, then fire due ticks."""
        if self._after is not None:
            await wait_set(self._after, FIRST_LOOK_MAX_DELAY)
        while True:
            # Cleared before the look, so a wake that comes during it is not lost: the sleep below ends at once.
            self._woken.clear()
            try:
                if not self.synced:
                    await self._sync()
                wait = await self.step()
                self.looks += 1
            except (RedisError, OSError) as exc:
                logger.debug("schedules: redis unavailable (%s); trying again", exc)
                wait = REDIS_RETRY_SECONDS
            except Exception:
                # A bug here must not take the worker down (its jobs would drain): log it, look again later.
                logger.exception("queue %s: schedules: unexpected error; trying again", self.spec.name)
                wait = self.poll_seconds
            await wait_set(self._woken, wait)

    async def _sync(self) -> None:
        changed = await self.store.sync_declared()
        self.synced = True
        if changed:
            logger.info("queue %s: schedules written from the queues file: %s", self.spec.name, ", ".join(changed))

    async def step(self) -> float:
        """Settle what is due now; return how long to sleep until the next look."""
        now, due, earliest = await self.store.due(BATCH)
        settled = 0
        for name, tick, raw in due:
            result, decision = await self.store.fire(name, tick, raw, now, self._random)
            if result == 0 or decision is None:
                continue  # another worker settled this tick first, or the schedule changed: the next look sees it
            settled += 1
            if decision.missed:
                logger.warning(
                    "queue %s: schedule %s: tick %d is %.1fs late (no worker ran); %s",
                    self.spec.name,
                    name,
                    tick,
                    (now - tick) / 1000,
                    "running it once for the missed ticks" if decision.enqueue else "skipped with the missed ticks",
                )
            if result == 1:
                self.fired += 1
                logger.info("queue %s: schedule %s: enqueued the job of tick %d", self.spec.name, name, tick)
        if due:
            # Look again at once: the ticks just advanced may be due already (a catch-up within grace), and
            # the earliest tick read before them is stale. Ticks all taken by other workers: a short pause.
            return 0.0 if settled else 0.05
        if earliest is None:
            return self.poll_seconds
        # Both times are Redis' clock, so the sleep is a duration and no pod's clock is involved. The extra
        # millisecond: waking a hair early would only find nothing due and sleep again.
        return min(self.poll_seconds, max(earliest - now + 1, 1) / 1000)
