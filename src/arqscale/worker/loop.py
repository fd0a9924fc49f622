"""The worker: runs the jobs of one queue in one process (``arqscale worker --queue NAME``).

Compatible with arq's key layout (jobs from plain ``ArqRedis.enqueue_job`` run too), but not built
on ``arq.Worker``: arq polls every 0.5 s, takes one job per round trip and holds a job for its whole
timeout after a crash. This loop instead

- wakes on the queue's pub/sub channel (our producer publishes), and still polls for plain arq
  producers and wakes at the next deferred job's ready time;
- takes a batch of jobs per pickup call (up to the free slots and a small reserve, at most ``PICK_MAX``) and
  records the outcomes of the jobs that ended in the same round trip (see ``pickup``), with three round trips
  in flight at once (``pickup.LANES``);
- holds each running job by a short lease it renews every ``lease_seconds / 3``, so a killed
  worker's jobs run again within ``lease_seconds``; each pickup has a token, and Redis honours an
  outcome or a heartbeat only from the token that holds the job (a worker that stalled past its lease
  writes nothing, and its copy of the job is cancelled);
- on SIGTERM stops picking, lets running jobs finish within the drain timeout, then puts back the rest.

The protocol lives in docs/design.md ("Job life cycle"); the Lua side in ``pickup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib
import inspect
import itertools
import json
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import redis as sync_redis
from arq.connections import ArqRedis
from arq.jobs import DeserializationError, serialize_result
from arq.worker import Retry
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from arqscale.core import connection, live_workers, scores, serializers, tracing
from arqscale.core.lua import RETRY_TTL_MS
from arqscale.core.models import Progress
from arqscale.core.queue_control import RESUME, SCHEDULES_WAKE, stranded
from arqscale.core.spec import QueueSpec
from arqscale.worker import outcomes
from arqscale.worker.deadlines import Deadlines
from arqscale.worker.invalidation import QueueWatch
from arqscale.worker.job_log import JobLog, JobLogHandler, JobLogSink
from arqscale.worker.metrics import WorkerMetrics
from arqscale.worker.outcomes import Decoded, decode_payload
from arqscale.worker.pickup import LANES, Finish, Picked, PickupResult, QueueOps
from arqscale.worker.probes import Health
from arqscale.worker.scheduler import Scheduler
from arqscale.worker.turns import Turns
from arqscale.worker.waiting import check_cancelled, wait_set
from arqscale.worker.watchdog import LoopWatchdog

logger = logging.getLogger("arqscale.worker")

TaskFunction = Callable[..., Awaitable[Any]]
PROGRESS_TTL_MS = RETRY_TTL_MS
PULSE_SECONDS = 0.1
# Back-off while Redis is unreachable: quick first retries (a failover), then once a second.
REDIS_RETRY_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0)
# How often a worker with running jobs looks for a plain arq client's abort request (ours also publish).
ABORT_POLL_SECONDS = 0.5
# An idle worker whose subscription carries every enqueue (wake-ups, and plain arq enqueues as invalidations)
# polls less and less often, up to this: the poll only backs up messages, and at 0.5 s it was most of an idle
# worker's Redis load (each pickup is a script of a dozen commands). Any message or job resets it.
IDLE_POLL_MAX_SECONDS = 5.0
# How long an idle worker blocks on the queue's marker per call: under the client's 5 s socket timeout.
MARKER_WAIT_SECONDS = 2.0
# Jobs one pickup call asks for at most (besides twice the concurrency): see Worker._pick_cap.
PICK_MAX = 100
# The reserve (``Worker._reserve_room``): leased jobs kept ready to start the moment a slot frees, sized so that a
# job waits in it about this long on average, given the queue's recent run times; and one that waited longer than
# RESERVE_MAX_SECONDS (every slot held by long jobs) goes back to the queue, for a worker with room.
RESERVE_WAIT_SECONDS = 0.005
RESERVE_MAX_SECONDS = 0.5
# A try's outcome as its span names it (the worker metrics' words).
TRY_OUTCOMES = {"ok": "complete", "retry": "retried", "dead": "dead", "back": "put_back", "cancel": "cancelled"}


class WorkerSetupError(RuntimeError):
    """The queue's functions cannot be loaded; the message names the function and the reason."""


class DeletionCost(Protocol):
    def set_busy(self, busy: bool) -> None: ...


@dataclasses.dataclass(slots=True)
class _Lane:
    """One of the round trips (finish and pickup) a worker keeps in flight at once (``pickup.LANES``)."""

    index: int
    token: str | None = None  # a pickup sent whose reply was not read: a resend must carry the same token
    busy: bool = False
    wanted: int = 0  # jobs its pickup in flight may bring: slots no other lane may ask for meanwhile


def load_functions(spec: QueueSpec) -> dict[str, TaskFunction]:
    """Import every task function of the queue: name (what producers enqueue) -> coroutine function."""
    functions: dict[str, TaskFunction] = {}
    for name, path in spec.function_names.items():
        module_name, attr = path.rsplit(".", 1)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise WorkerSetupError(f"queue {spec.name!r}: cannot import {module_name} for {path}: {exc}") from exc
        fn = getattr(module, attr, None)
        if fn is None:
            raise WorkerSetupError(f"queue {spec.name!r}: {module_name} has no function {attr!r}")
        if not inspect.iscoroutinefunction(fn):
            raise WorkerSetupError(f"queue {spec.name!r}: {path} must be an `async def` function (ctx, ...)")
        functions[name] = fn
    return functions


def _ms() -> int:
    return scores.now_ms()


class Worker:
    """Runs one queue. ``await run()`` returns once a requested drain has finished."""

    def __init__(
        self,
        spec: QueueSpec,
        redis: Redis,
        *,
        functions: Mapping[str, TaskFunction] | None = None,
        worker_id: str | None = None,
        metrics: WorkerMetrics | None = None,
        health: Health | None = None,
        drain_timeout: float | None = None,
        deletion_cost: DeletionCost | None = None,
        blocked_reporter: sync_redis.Redis | None = None,
        block_threshold: float = 1.0,
        traced: bool = False,
    ) -> None:
        self.spec = spec
        # A span per try (arqscale.core.tracing); the process turns it on from OTEL_* (``setup_from_env``).
        self._tracing = traced
        self.redis = redis
        self.functions = dict(functions) if functions is not None else load_functions(spec)
        self.worker_id = worker_id or f"{spec.name}-{uuid.uuid4().hex[:12]}"
        self.metrics = metrics or WorkerMetrics(spec.name, spec.concurrency)
        self.health = health or Health(redis_unreachable_seconds=60.0)
        self.drain_timeout = spec.effective_drain_timeout if drain_timeout is None else drain_timeout
        self.deletion_cost = deletion_cost
        self.ops = QueueOps(redis, spec, self.worker_id)
        self._started_at = round(time.time(), 3)
        # Results and the tasks' own enqueues are serialized on this loop's thread only.
        self._dumps, self._loads = serializers.for_queue(spec.serializer, one_thread=True)
        # Tasks get an ArqRedis on the same pool, as under arq: `ctx["redis"].enqueue_job(...)` chains a job
        # onto this queue, with this queue's serializer.
        # On Redis Cluster there is no ArqRedis (arq has no cluster client): tasks get the cluster client, and
        # enqueue with arqscale's Producer.
        self._task_redis: Redis = (
            redis
            if self.ops.keys.cluster
            else ArqRedis(
                redis.connection_pool,
                job_serializer=self._dumps,
                job_deserializer=self._loads,
                default_queue_name=spec.queue_key,
            )
        )
        self._blocked_reporter = blocked_reporter
        self._watchdog = LoopWatchdog(Worker._execute.__code__, self._on_loop_blocked, threshold=block_threshold)

        self._deadlines = Deadlines(spec.job_timeout)  # every job's timeout, on one timer
        # Replaced by the running loop's own create_task once `run` starts (see there).
        self._new_task: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] = asyncio.create_task
        self._completed = 0  # completed tries not yet counted in the metrics (``_count``)
        # At most PICK_MAX per pickup: jobs taken together end together, and a slot freed in a big cohort waits
        # for the whole cohort's finish and pickup (I/O-bound jobs at concurrency 500: 83 % of ideal at 250 a
        # call, 87 % at 50, side by side; 100 measured as 50 did). Below that, up to twice the slots: what a
        # pickup asks beyond the free slots is the reserve's room (``_reserve_room``), so the second half only
        # ever brings jobs short enough to wait in it. Pickups of at most the slots left no-op jobs at
        # concurrency 50 round-trip bound (each lane's 50 jobs ran in ~1.4 ms while its reply took ~2.7 ms);
        # twice the slots over three lanes ran them 1.4x as fast (bench/run.py, 40,000 jobs, session 9).
        self._pick_cap = max(1, min(2 * spec.concurrency, PICK_MAX))
        self._tokens = itertools.count(1)
        # Round trips in flight at once (``pickup.LANES``): while one lane's pickup is on its way, another carries the
        # outcomes of jobs that ended meanwhile (and takes more when slots are free), so Redis and this process work
        # side by side.
        self._lanes = [_Lane(i) for i in range(LANES)]
        self._crash: BaseException | None = None  # a bug in a round trip, raised by the loop
        self._resent = False  # the records in _finished went out once already (their reply was lost)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._picked: dict[str, Picked] = {}  # every job this worker holds a lease on: running or reserved
        # Leased but not started, oldest first: job id -> when it came (monotonic). Only short jobs on queues
        # without rate or per-key limits (their pickup counts a start as it hands the job out).
        self._reserved: dict[str, float] = {}
        self._may_reserve = spec.prefetch and spec.rate_limit is None and spec.group is None
        self._mean_run: float | None = None  # seconds a completed try ran, a moving average: sizes the reserve
        # A reserve given back because every slot stayed busy: none again until a slot frees, or the next pickup
        # would lease the very jobs just given back (the run times that size the reserve lag behind long jobs).
        self._reserve_held_off = False
        self._finished: list[Finish] = []
        self._abandoned: set[str] = set()
        self._cancelling: set[str] = set()  # running jobs a cancel request named: they end cancelled
        self._progressed: set[str] = set()  # running jobs that stored progress (their outcome gives it a TTL)
        self._abort_check = asyncio.Event()  # a cancel was published: look at the abort set now
        self._tick = asyncio.Event()  # wakes the loop: a reason to step (``_ask``) or a lane came back
        self._asked = True  # a reason to step: a job ended, a wake-up, a drain, ...
        self._due = 0.0  # monotonic: when the loop steps without being asked (poll, next deferred job)
        # Whether the next round trip takes jobs too. A job that ends only needs its outcome written: while the last
        # pickup came back short (``_caught_up``), another one finds nothing unless something since said there is
        # more (a wake-up, the marker, an invalidation: ``_ask``) or the time the last pickup named has come. At a
        # steady rate below a worker's capacity this leaves out the empty pickup after every finish: a third of the
        # script calls per job (bench/end_to_end.py).
        self._pick_next = True
        self._pick_due = 0.0  # monotonic: when the last pickup said to look again (a poll, the next deferred job)
        self._cut_now = asyncio.Event()
        self._draining = False
        self._cutting = False
        self._drain_over = False  # the drain timeout has passed (or a second signal came)
        self._redis_failures = 0
        # Heartbeat and finish/pickup never interleave (see ``turns``); the lanes' round trips do.
        self._turns = Turns()
        self._hold_until = 0.0  # monotonic: paused or rate window used up, wake-ups before this are pointless
        self._listening = False  # the subscription is up and every kind of enqueue arrives on it
        self._idle_polls = 0  # empty pickups in a row while listening: each doubles the next wait
        self._renew_now = asyncio.Event()  # Redis is back: renew leases at once, not at the next interval
        self._slot_freed = asyncio.Event()  # a running job ended: a full worker may wait on the marker again
        # The last pickup came back short: the queue had no more ready jobs for us, so only the marker (or a
        # wake-up) says when there are. While pickups come back full the lanes pick again at once, and waiting
        # on the marker too would only pop the marker each pickup re-adds (bench/run.py no-op c50: -15 %).
        self._caught_up = True
        # Set once the first jobs are done (or none were there): the start-up work that can wait goes after them.
        self._settled = asyncio.Event()
        # The queue's schedules: every worker fires due ticks (one wins each).
        self.scheduler = Scheduler(spec, redis, after=self._settled)
        self.job_logs = JobLogSink(redis, spec.logs, self.ops.keys)  # ctx["log"] and `logging` while a task runs
        capture = spec.logs.capture_logging and self.job_logs.enabled
        self._log_handler = JobLogHandler(self.job_logs, spec.logs.level) if capture else None

    # ----------------------------------------------------------------- life cycle

    async def run(self) -> None:
        # Jobs' tasks are made with the loop's own create_task: asyncio.create_task asks for the running loop,
        # which in CPython 3.11 is a getpid() system call each time (a fork check).
        self._new_task = asyncio.get_running_loop().create_task
        # The checks only warn: they run beside the first pickup rather than before it (cold start,
        # bench/cold_start.py), and end on their own.
        checks = asyncio.create_task(self._startup_checks(), name="startup-checks")
        self._watchdog.start()
        background = self._start_background()
        if self._log_handler is not None:
            logging.getLogger().addHandler(self._log_handler)
        drain_timer: asyncio.Task[None] | None = None
        trips: set[asyncio.Task[None]] = set()
        try:
            while not (self._draining and not self._running and not self._finished and not trips):
                if self._crash is not None:
                    raise self._crash
                if self._draining and drain_timer is None:
                    drain_timer = asyncio.create_task(self._drain_timer(), name="drain")
                if self._drain_over and not self._running and self.health.redis_down_since is not None:
                    self._give_up_unwritten()
                    break
                lane = next((lane for lane in self._lanes if not lane.busy), None)
                if lane is not None and (self._asked or time.monotonic() >= self._due):
                    if time.monotonic() >= self._due:
                        self._pick_next = True  # a poll, or the time a deferred job becomes ready
                    self._asked = False
                    self._due = float("inf")  # until a reply says when to look again
                    lane.busy = True
                    trip = asyncio.create_task(self._step(lane), name=f"round-trip-{lane.index}")
                    trips.add(trip)
                    trip.add_done_callback(trips.discard)
                    continue
                self._tick.clear()
                # Every lane out: wait for one to come back (it sets the tick), however long Redis takes.
                wait = None if lane is None else self._due - time.monotonic()
                if wait is None or wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._tick.wait()
        finally:
            for trip in trips:
                trip.cancel()
            await asyncio.gather(*trips, return_exceptions=True)
            if self._log_handler is not None:
                logging.getLogger().removeHandler(self._log_handler)
            self._watchdog.stop()
            self._deadlines.close()
            self._count()
            background.append(checks)
            if drain_timer is not None:
                background.append(drain_timer)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError):
                await self.ops.leave()
                await self.redis.delete(self.ops.keys.worker_record(self.worker_id))
        logger.info("worker %s drained and stopped", self.worker_id)

    def _start_background(self) -> list[asyncio.Task[None]]:
        """The loops that run beside the pickups; each only ends by cancellation (``_background_ended``)."""
        loops = {
            "heartbeat": self._heartbeat_loop(),
            "wake": self._wake_listener(),
            "pulse": self._pulse(),
            "cancel": self._abort_watch(),
            "scheduler": self.scheduler.run(),
            "job-logs": self.job_logs.run(),
        }
        if not self.ops.keys.cluster:  # on Redis Cluster the producer publishes instead (producer.wake_commands)
            loops["marker"] = self._marker_watch()
        tasks = [asyncio.create_task(coro, name=name) for name, coro in loops.items()]
        for task in tasks:
            task.add_done_callback(self._background_ended)
        return tasks

    async def _startup_checks(self) -> None:
        """Warn about what would lose or hide jobs without an error: a Redis that evicts keys, and jobs
        stranded outside the configured priority bands. Best effort: a Redis not up yet is the loop's
        business."""
        try:
            for info in await connection.info_per_node(self.redis, "memory"):
                policy = str(info.get("maxmemory_policy", "noeviction"))
                if policy != "noeviction":
                    logger.warning(
                        "redis maxmemory-policy is %r: under memory pressure Redis deletes keys, payloads and "
                        "leases included, and jobs vanish; set it to 'noeviction' (as BullMQ requires)",
                        policy,
                    )
                    break
            if self.ops.keys.cluster:
                await self._cluster_checks()
            count = await stranded(self.redis, self.spec)
        except (RedisError, OSError) as exc:
            logger.debug("start-up checks skipped: %s", exc)
            return
        self.metrics.stranded_q.set(count)
        if count:
            logger.warning(
                "queue %s: %d job(s) sit outside the configured priority bands (priority_levels or "
                "default_priority changed since they were enqueued); no worker takes them until "
                "`arqscale queue migrate %s` moves them into the nearest band",
                self.spec.name,
                count,
                self.spec.name,
            )

    async def _cluster_checks(self) -> None:
        """On Redis Cluster the queue's keys are the hash-tagged ones; say so when the queues file or a plain
        arq producer expects arq's."""
        if self.spec.redis_key:
            logger.warning(
                "queue %s: redis_key %r is not used on Redis Cluster: the queue is %s",
                self.spec.name,
                self.spec.redis_key,
                self.ops.keys.queue,
            )
        strays = int(await self.redis.zcard(self.spec.queue_key))
        if strays:
            logger.error(
                "queue %s: %d job(s) in %s, arq's own queue key, never run here: the queue on Redis Cluster is %s. %s",
                self.spec.name,
                strays,
                self.spec.queue_key,
                self.ops.keys.queue,
                connection.PLAIN_ARQ_ON_CLUSTER,
            )

    async def first_jobs_done(self, at_most: float) -> None:
        """Return once the first jobs are done (or there were none), or after ``at_most`` seconds: the start-up
        work that can wait goes then (the metrics' import, ``arqscale.worker.process``)."""
        await wait_set(self._settled, at_most)

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        # These loops only end by cancellation. Anything else is a bug: without heartbeats the leases lapse
        # and other workers rerun our jobs, so stop cleanly and let the pod restart.
        if task.cancelled() or self._draining:
            return
        logger.error("worker %s: %s loop died, draining", self.worker_id, task.get_name(), exc_info=task.exception())
        self.request_drain()

    def request_drain(self) -> None:
        """SIGTERM/SIGINT: stop picking at once; a second signal cuts running jobs short (they are put back)."""
        if self._draining:
            logger.warning("second stop signal: putting back %d running job(s) now", len(self._running))
            self._cut_now.set()
            return
        logger.info(
            "draining: no more pickups; %d running job(s) get %gs to finish", len(self._running), self.drain_timeout
        )
        self._draining = True
        self.health.draining = True
        self.metrics.draining_q.set(1)
        self._give_back_reserve("drain")
        self._ask()

    async def _drain_timer(self) -> None:
        await wait_set(self._cut_now, self.drain_timeout)
        if self._running:
            await self._cut()
        self._drain_over = True
        self._ask()

    def _give_up_unwritten(self) -> None:
        """The drain is over and Redis does not answer: stop rather than retry forever (a Redis that went
        down with the rest of a local stack, or a pod about to be killed anyway). The jobs keep their place
        in the queue and run again once their leases lapse."""
        ids = ", ".join(r.job_id for r in self._finished)
        logger.error(
            "redis unreachable at the end of the drain: %d outcome(s) not recorded, their jobs run again "
            "once their leases lapse: %s",
            len(self._finished),
            ids,
        )

    async def _cut(self) -> None:
        """Cancel what still runs and put it back in its band, its try not counted (design: Drain)."""
        self._cutting = True
        tasks = dict(self._running)
        logger.warning("drain timeout: putting back %d job(s): %s", len(tasks), ", ".join(tasks))
        for task in tasks.values():
            task.cancel()
        await asyncio.wait(tasks.values(), timeout=2.0)
        for job_id in list(self._running):
            job = self._picked.get(job_id)
            if job is not None and tasks[job_id].done():
                # Cancelled before its first step: it left no record, and it is not running. Put it back.
                self._finished.append(self._back(job))
            elif job is not None:
                # It swallowed the cancellation and still runs: putting it back would let another worker run
                # it beside this one. Keep the lease out of the heartbeat instead; it lapses once this process
                # has exited, and the job runs again then (this try counts).
                logger.error("job %s ignored its cancellation; it runs again after its lease lapses", job_id)
            self._abandoned.add(job_id)
            self._forget(job_id)
        self._ask()

    # ----------------------------------------------------------------- the loop

    async def _step(self, lane: _Lane) -> None:
        """One lane's round trip, then when the loop should step again unasked; wakes the loop."""
        try:
            wait = await self._round_trip(lane)
        except Exception as exc:
            self._crash = exc  # a bug: the loop raises it (nobody awaits this task), as when it awaited the step
            return
        finally:
            lane.busy = False
            lane.wanted = 0
            self._tick.set()
        self._due = min(self._due, time.monotonic() + wait)

    async def _round_trip(self, lane: _Lane) -> float:
        """Flush finished jobs and take new ones in one round trip; return how long to wait for the next tick."""
        self._count()
        async with self._turns.shared():
            records, self._finished = self._finished, []
            # Back from a Redis outage: renew our leases (the heartbeat) before taking more, or this pickup's
            # sweep would hand our own expired leases to whoever picks first.
            held_off = self._draining or self.health.redis_down_since is not None
            # The time the last pickup named has come: take jobs in this trip rather than in one right after it.
            pick = self._pick_next or not self._caught_up or time.monotonic() >= self._pick_due
            free = 0 if held_off or not pick else self._free_slots()
            if not records and free <= 0:
                return self.spec.poll_interval if pick else max(self._pick_due - time.monotonic(), 0.0)
            wanted = lane.wanted = max(min(free, self._pick_cap), 0)
            if wanted > 0:
                self._pick_next = False  # a wake-up from now on asks again
            # A token is kept until a pickup with it succeeds: only a kept one may be a resend of a lost reply.
            fresh = lane.token is None
            token = lane.token = lane.token or f"{self.worker_id}.{next(self._tokens)}"
            resent, self._resent = self._resent, False
            try:
                result, stale = await self.ops.finish_and_pickup(records, wanted, token, fresh=fresh, lane=lane.index)
            except (RedisError, OSError) as exc:
                # Nothing is dropped: the same batch and the same pickup token go again. Both are keyed by
                # their tokens, so whatever the lost reply had already written is not written twice.
                self._finished[:0] = records
                self._resent = bool(records)
                self._pick_next = self._pick_next or wanted > 0
                return self._redis_failed(exc)
            if stale is None:
                self._finished[:0] = records
                self._resent = bool(records)
                self._ask()
            elif stale:
                self._stale(stale, resent)
            if result is not None:
                lane.token = None
            elif wanted > 0:
                self._pick_next = True  # the pickup failed (its token is kept): send it again with the next trip
        self._redis_ok()
        if result is not None:
            self._took(result, wanted)
        lane.wanted = 0  # its jobs are counted in _running now
        if not self._settled.is_set() and (records or not self._running):
            self._settled.set()  # outcomes written, or nothing to run
        if self.deletion_cost is not None:
            self.deletion_cost.set_busy(bool(self._running))
        capped = result is not None and wanted < free and len(result.jobs) == wanted
        if capped and result is not None and not (result.paused or result.rate_limited):
            # A capped pickup got all it asked for: take the rest at once, while the jobs just started run.
            return 0.0
        if result is None:
            # Outcomes only: keep to when the last pickup said to look again.
            return self.spec.poll_interval if wanted > 0 else max(self._pick_due - time.monotonic(), 0.0)
        wait = self._next_wait(result, wanted)
        self._pick_due = time.monotonic() + wait
        return wait

    def _free_slots(self) -> int:
        """Jobs a pickup may ask for now: the free slots and the reserve's room, less what the lanes in flight
        asked for (their pickups may fill those)."""
        if self._reserved:
            self._return_stale_reserve()
        pending = sum(lane.wanted for lane in self._lanes)
        room = self.spec.concurrency + self._reserve_room() - len(self._running) - len(self._reserved)
        return room - pending

    def _took(self, result: PickupResult, wanted: int) -> None:
        """A pickup's reply: count it, note whether it came back short, start (or reserve) its jobs."""
        self.metrics.pickups_q.inc()
        if result.swept:
            self.metrics.swept_q.inc(result.swept)
        if wanted > 0:
            self._caught_up = len(result.jobs) < wanted
            if self._caught_up:
                self._slot_freed.set()
        if self._reserved:
            self._start_reserved()  # slots freed without a job ending (leases lost): the oldest first
        for job in result.jobs:
            self._take(job)
        self._count()

    def _ask(self) -> None:
        """A reason to step and take jobs: the loop sends a round trip as soon as a lane is free."""
        self._asked = True
        self._pick_next = True
        self._tick.set()

    def _flush(self) -> None:
        """Outcomes to write: a round trip as soon as a lane is free, which takes jobs only when there may be some
        (``_pick_next``)."""
        self._asked = True
        self._tick.set()

    def _stale(self, job_ids: list[str], resent: bool) -> None:
        """Outcomes Redis dropped: the job was no longer held by the token they carried."""
        if resent:
            # A resend after a lost reply: most of these were written by the first send. Not a stale owner.
            logger.info("resent outcomes already settled: %s", ", ".join(job_ids))
            return
        logger.warning(
            "outcomes dropped, the lease had passed to another worker (this one stalled or was cut off): %s",
            ", ".join(job_ids),
        )
        self.metrics.stale_outcomes_q.inc(len(job_ids))

    def _next_wait(self, result: PickupResult, free: int) -> float:
        if result.paused:
            self._hold_until = time.monotonic() + self.spec.poll_interval
            return self.spec.poll_interval
        if result.rate_limited:
            # Wait for the rate window to end, not woken by every enqueue meanwhile.
            wait = max(result.wait_ms, 1) / 1000 if result.wait_ms >= 0 else self.spec.poll_interval
            self._hold_until = time.monotonic() + wait
            return wait
        if len(result.jobs) < free and result.wait_ms == 0:
            # The pickup stopped at its hold budget (a plain arq producer's burst of one key at its limit, moved
            # aside HOLD_MAX per call): go on at once, so another key's job behind the burst is not left waiting
            # for polls. Each call is one short script, so Redis serves other clients between them.
            return 0.0
        poll = self._poll_wait(idle=not result.jobs and not self._running)
        if len(result.jobs) < free and result.wait_ms >= 0:
            return min(poll, max(result.wait_ms, 1) / 1000)
        return poll

    def _poll_wait(self, *, idle: bool) -> float:
        """``poll_interval``, doubled for each empty pickup in a row while the subscription is listening."""
        if not (idle and self._listening):
            self._idle_polls = 0
            return self.spec.poll_interval
        longest = max(IDLE_POLL_MAX_SECONDS, self.spec.poll_interval)
        wait: float = min(self.spec.poll_interval * 2.0**self._idle_polls, longest)
        self._idle_polls = min(self._idle_polls + 1, 16)
        return wait

    def _redis_failed(self, exc: BaseException) -> float:
        if self.health.redis_down_since is None:
            logger.warning("redis unreachable (%s: %s); retrying, running jobs go on", type(exc).__name__, exc)
        self.health.redis_failed(exc)
        self.metrics.redis_errors_q.inc()
        self.metrics.redis_up_q.set(0)
        delay = REDIS_RETRY_SECONDS[min(self._redis_failures, len(REDIS_RETRY_SECONDS) - 1)]
        self._redis_failures += 1
        return delay

    def _redis_ok(self) -> None:
        if self.health.redis_down_since is not None:
            logger.info("redis reachable again after %.1fs", self.health.redis_down_for())
            self._renew_now.set()
            self._ask()  # and write the outcomes that waited for it
        self.health.redis_ok()
        self.health.started = True
        self._redis_failures = 0
        self.metrics.redis_up_q.set(1)

    async def _heartbeat_loop(self) -> None:
        interval = self.spec.lease_seconds / 3
        while True:
            check_cancelled()
            try:
                async with self._turns.alone():
                    # Finished jobs whose outcome is not written yet (Redis away) keep their lease too, or
                    # another worker would run them again.
                    held = [(job_id, job.token) for job_id, job in self._picked.items()]
                    held += [(r.job_id, r.token) for r in self._finished]
                    beat = await self.ops.heartbeat(held, int(self.spec.lease_seconds * 1000))
                    await live_workers.describe(
                        self.redis,
                        self.ops.keys,
                        self.worker_id,
                        self._identity(),
                        int(self.spec.lease_seconds * 1000),
                    )
            except (RedisError, OSError) as exc:
                # Retry soon: the leases run out lease_seconds after the last renewal, outage or not.
                self._redis_failed(exc)
                await asyncio.sleep(min(interval, 0.1))
                continue
            self._redis_ok()
            if beat.swept:
                self.metrics.swept_q.inc(beat.swept)
            if beat.lost:
                self._lost(beat.lost)
            self._renew_now.clear()
            await wait_set(self._renew_now, interval)

    def _identity(self) -> dict[str, Any]:
        """The worker's record for the dashboard's Workers view (``live_workers.describe``)."""
        return {
            "host": socket.gethostname(),
            "pod": os.environ.get("POD_NAME"),
            "pid": os.getpid(),
            "started_at": self._started_at,
            "running": len(self._running),
            "concurrency": self.spec.concurrency,
        }

    def _lost(self, job_ids: list[str]) -> None:
        """Leases that ran out while this worker was stalled or cut off: the jobs went back to the queue (and
        maybe to another worker). Stop our copies; whatever they would write would be dropped anyway."""
        running = [j for j in job_ids if j in self._running]
        lost = set(job_ids)
        for job_id in lost & self._reserved.keys():
            # Not started: nothing to stop, and nothing to write (another worker may hold the job now).
            del self._reserved[job_id]
            self._picked.pop(job_id, None)
        # Finished jobs whose outcome waits to be written hold no lease any more either: their record goes. After
        # a lost reply (a resend pending) the first send most likely wrote it; otherwise Redis would drop it as
        # stale, and it is counted so. Only running copies are lost leases.
        unwritten = [r.job_id for r in self._finished if r.job_id in lost and r.job_id not in self._running]
        self._finished = [r for r in self._finished if r.job_id not in lost]
        if unwritten:
            self._stale(unwritten, self._resent)
        if not running:
            self._ask()
            return
        logger.warning("lease lost (this worker stalled or was cut off past it), stopping: %s", ", ".join(running))
        self.metrics.lost_leases_q.inc(len(running))
        for job_id in running:
            self._abandoned.add(job_id)
            self._running[job_id].cancel()
            self._forget(job_id)
        self._ask()

    async def _wake_listener(self) -> None:
        """Our producer publishes on the wake channel: pick up at once instead of at the next poll. Plain arq
        producers publish nothing: their enqueues arrive as client-tracking invalidations of the queue key
        (``invalidation.QueueWatch``) on the same subscription."""
        cluster = self.ops.keys.cluster
        while True:
            # On a cluster the subscription is a plain connection to one node; no plain arq producer can write
            # to a cluster, so there is no queue key to track either.
            node: Redis | None = None
            pubsub: PubSub | None = None
            watch = QueueWatch(self.redis, self.spec.queue_key, enabled=not cluster)
            try:
                node = await connection.node_client(self.redis, self.ops.keys.wake) if cluster else None
                pubsub = (node or self.redis).pubsub()
                tracked = await watch.start(pubsub)
                await pubsub.subscribe(self.ops.keys.wake)
                # No client tracking (an ACL without CLIENT, Redis < 6, a cluster): polls at poll_interval, as
                # plain arq enqueues and jobs another worker put back (a finish publishes nothing) need them.
                self._listening = tracked
                self._ask()  # anything published while we were not subscribed
                self.scheduler.wake()
                while not watch.broken:
                    check_cancelled()  # see worker.waiting: a command may return although the task was cancelled
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is None or self._draining:
                        continue
                    invalidated = watch.concerns_queue(message)
                    if invalidated is not None:
                        # The queue key changed: a plain arq enqueue, or another worker's pickup or finish.
                        # Only worth a pickup when this worker has room (the pickup answers empty otherwise).
                        room = len(self._running) < self.spec.concurrency
                        if invalidated and room and time.monotonic() >= self._hold_until:
                            self._ask()
                        continue
                    if message.get("data") == b"cancel":
                        self._abort_check.set()
                        continue
                    if message.get("data") == SCHEDULES_WAKE.encode():
                        self.scheduler.wake()  # a runtime schedule's next tick may be sooner than its sleep
                        continue
                    if message.get("data") == RESUME.encode():
                        self._hold_until = 0.0  # the pause that made us hold off is over
                    if time.monotonic() >= self._hold_until:
                        self._ask()
            except (RedisError, OSError):
                await asyncio.sleep(0.5)  # the loop's own calls report the outage; polling covers the gap
            finally:
                self._listening = False  # polls at poll_interval until the subscription is back
                await watch.close()
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                if node is not None:
                    with contextlib.suppress(Exception):
                        await node.aclose()

    def _has_room(self) -> bool:
        """Whether a pickup now could take a job: a slot free, not draining, not held off (paused, rate window
        used up)."""
        if self._draining or time.monotonic() < self._hold_until:
            return False
        # Lanes in flight are not counted: their pickups may come back short, and a wake-up left unanswered
        # while they are out delays the job until the next round trip (bench/end_to_end.py: p99 3 -> 67 ms).
        return len(self._running) < self.spec.concurrency

    async def _marker_watch(self) -> None:
        """Our enqueues of ready jobs add the queue's marker (``keys.marker``): a worker with room waits on it
        with ``BZPOPMIN``, so one idle worker wakes per enqueue rather than every one (bench/idle_herd.py), and
        its pickup adds the marker again while ready jobs remain, for the next. On Redis Cluster the producer
        publishes instead (``producer.wake_commands``) and this loop does not run."""
        key = self.ops.keys.marker
        # A connection of its own, held out of the pool: a stop cancels the wait mid-read, and the connection is
        # then closed here, awaited, rather than dropped half-read (redis-py closes it without waiting, and a
        # loop that ends right after leaves its socket open).
        conn: Any = await self.redis.connection_pool.get_connection()
        try:
            while True:
                check_cancelled()
                if not (self._caught_up and self._has_room()):
                    # A full or held worker leaves the marker to the others, until a job of its own ends; one that
                    # is still taking full pickups does not need it.
                    self._slot_freed.clear()
                    await wait_set(self._slot_freed, PULSE_SECONDS)
                    continue
                try:
                    await conn.send_command("BZPOPMIN", key, MARKER_WAIT_SECONDS)
                    popped = await conn.read_response(disconnect_on_error=False)
                except (RedisError, OSError):
                    await conn.disconnect()  # the next send reconnects
                    await asyncio.sleep(0.5)  # the loop's own calls report the outage
                    continue
                if not popped:
                    continue
                if self._has_room():
                    self._ask()
                    continue
                # Filled up while it waited: hand the wake-up on to another worker.
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.zadd(key, {"0": 0})
        finally:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            await self.redis.connection_pool.release(conn)

    async def _abort_watch(self) -> None:
        """Cancel running jobs named in arq's abort set: at once when our cancel path publishes, within
        ``ABORT_POLL_SECONDS`` for a plain arq client's ``Job.abort()`` (which only writes the set)."""
        while True:
            await wait_set(self._abort_check, ABORT_POLL_SECONDS)
            self._abort_check.clear()
            running = [j for j in self._running if j not in self._cancelling] + list(self._reserved)
            if not running:
                continue
            try:
                marks = await self.redis.zmscore(self.ops.keys.abort, running)
            except (RedisError, OSError):
                continue  # the loop's own calls report the outage
            for job_id, mark in zip(running, marks, strict=True):
                if mark is not None and job_id in self._reserved:
                    self._end_reserved(job_id, lambda job: self._cancel(job, "cancelled before it ran"))
                    continue
                task = self._running.get(job_id)
                if mark is not None and task is not None:
                    logger.info("job %s: cancel requested, stopping it", job_id)
                    self._cancelling.add(job_id)
                    task.cancel()

    async def _pulse(self) -> None:
        while True:
            check_cancelled()
            before = time.monotonic()
            self._watchdog.beat()
            await asyncio.sleep(PULSE_SECONDS)
            self.metrics.loop_lag_q.set(max(time.monotonic() - before - PULSE_SECONDS, 0.0))

    # ----------------------------------------------------------------- one job

    def _take(self, job: Picked) -> None:
        """A job a pickup handed us: start it, or keep it in the reserve while every slot is busy."""
        if job.job_id in self._running or job.job_id in self._reserved:
            # Our own lease had lapsed and was swept, and the pickup handed the job back to us while our copy
            # still runs (or waits): keep that copy, under the new token.
            self._picked[job.job_id] = job
            return
        self._abandoned.discard(job.job_id)
        self._picked[job.job_id] = job
        if len(self._running) < self.spec.concurrency:
            self._running[job.job_id] = self._new_task(self._execute(job))
        elif self._draining:
            # A pickup sent before the drain brought more than the free slots: straight back.
            self._end_reserved_job(job, self._back)
        else:
            self._reserved[job.job_id] = time.monotonic()

    def _start_reserved(self) -> None:
        """A slot freed: start the oldest reserved jobs at once, without waiting for a round trip."""
        while self._reserved and len(self._running) < self.spec.concurrency and not self._draining:
            job_id = next(iter(self._reserved))
            del self._reserved[job_id]
            self._running[job_id] = self._new_task(self._execute(self._picked[job_id]))

    def _reserve_room(self) -> int:
        """How many leased jobs may wait here for a slot: enough for a freed slot never to wait for a round trip,
        few enough that a job waits about RESERVE_WAIT_SECONDS on average (slots free at ``concurrency /
        mean run time`` per second), and at most a full pickup for every lane but the one a freed slot's round
        trip takes (a smaller reserve held the lanes' pickups back: no-op jobs at concurrency 50 ran 22,000-23,700
        jobs/s with one pickup's worth, 33,000-34,400 with two). None before the first jobs ran, so long jobs
        never wait in it."""
        if not self._may_reserve or self._mean_run is None or self._reserve_held_off:
            return 0
        fits = int(self.spec.concurrency * RESERVE_WAIT_SECONDS / max(self._mean_run, 1e-6))
        return min(fits, (LANES - 1) * self._pick_cap)

    def _return_stale_reserve(self) -> None:
        """Every slot stayed busy longer than a reserved job should wait (the run times grew): the reserve goes
        back to the queue, to a worker with room."""
        if time.monotonic() - next(iter(self._reserved.values())) > RESERVE_MAX_SECONDS:
            self._give_back_reserve("unstarted")
            self._reserve_held_off = True

    def _give_back_reserve(self, reason: str) -> None:
        """The reserved jobs go back to the queue under their own scores, their try not counted."""
        for job_id in list(self._reserved):
            self._end_reserved(job_id, lambda job: self._back(job, reason))

    def _end_reserved(self, job_id: str, outcome: Callable[[Picked], Finish]) -> None:
        del self._reserved[job_id]
        self._end_reserved_job(self._picked[job_id], outcome)

    def _end_reserved_job(self, job: Picked, outcome: Callable[[Picked], Finish]) -> None:
        """A job that never started ends with ``outcome`` (put back, cancelled), written at the next round trip."""
        self._finished.append(outcome(job).queued(job, time.monotonic()))
        self._picked.pop(job.job_id, None)
        self._flush()

    def _forget(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self._picked.pop(job_id, None)
        if self._caught_up:
            self._slot_freed.set()

    def _count(self) -> None:
        """The per-job metrics kept as plain counts between ticks, into prometheus once per tick: before the
        tick's round trip writes the outcomes (a reader that saw an outcome sees it counted) and after its
        pickup started the jobs."""
        self.metrics.in_flight_q.set(len(self._running))
        if self._completed:
            self.metrics.by_outcome["complete"].inc(self._completed)
            self._completed = 0

    async def _execute(self, job: Picked) -> None:
        # The loop watchdog looks for this frame (and its `job` local) to name a job that blocks the loop.
        try:
            record = await self._attempt(job)
        except BaseException as exc:  # never let a job vanish: a bug here still leaves a record
            logger.exception("job %s: unexpected error in the worker", job.job_id)
            if isinstance(exc, asyncio.CancelledError) and job.job_id in self._cancelling:
                record = self._cancel(job, "cancelled while running")
            elif isinstance(exc, asyncio.CancelledError) and self._cutting:
                record = self._back(job)
            else:
                error = f"worker error: {type(exc).__name__}: {outcomes.describe(exc)}"
                record = self._dead(job, None, error, traceback.format_exc())
        record = self._storable(job, record)
        if job.job_id in self._abandoned:
            return
        if job.job_id in self._cancelling and record.kind in ("ok", "retry", "dead", "back"):
            # Cancelled while it ran: whatever the task did next (returned, failed, swallowed the
            # cancellation), the job ends cancelled, as requested.
            record = dataclasses.replace(self._cancel(job, "cancelled while running"), ran_ms=record.ran_ms)
        self._cancelling.discard(job.job_id)
        held = self._picked.get(job.job_id, job)
        self._finished.append(record.queued(held, time.monotonic()))
        self._forget(job.job_id)
        self._reserve_held_off = False  # a slot freed: the run times say again what may wait for one
        if self._reserved:
            self._start_reserved()
        self._flush()

    def _storable(self, job: Picked, record: Finish) -> Finish:
        """``record``, or when Redis could not be sent it (text UTF-8 cannot encode), a plain dead record:
        checked here, per job, so one bad record never stalls the batch it would travel in."""
        if not record.needs_check():
            return record  # bytes and numbers only (a completed try's result): nothing that could fail to encode
        try:
            record.wire()
        except Exception as exc:
            logger.error(
                "job %s: outcome %s cannot be stored (%s), the job is dead-lettered", job.job_id, record.kind, exc
            )
            self.metrics.by_outcome["dead"].inc()
            return outcomes.unstorable(self.spec, job, record, exc, _ms())
        return record

    async def _attempt(self, job: Picked) -> Finish:
        if job.aborted:
            return self._cancel(job, "cancelled before it ran")
        if job.payload is None:
            return self._dead(job, None, f"payload missing: {self.ops.keys.job(job.job_id)} expired or was deleted")
        try:
            decoded = decode_payload(job.payload, self._loads)
        except DeserializationError as exc:
            cause = exc.__cause__ or exc
            error = f"undecodable payload ({self.spec.serializer}): {type(cause).__name__}: {cause}"
            if self.spec.serializer == "json" and job.payload.startswith(b"\x80"):
                # arq's default producer pickles; a json queue never unpickles (security), it says why instead.
                error += "; it looks pickled: enqueue with a JSON job_serializer, or set `serializer: pickle`"
            return self._dead(job, None, error)
        fn = self.functions.get(decoded.function)
        if fn is None:
            known = ", ".join(sorted(self.functions))
            return self._dead(
                job, decoded, f"unknown function {decoded.function!r}; queue {self.spec.name!r} runs {known}"
            )
        job_try = max(job.job_try, decoded.enqueue_try or 0)
        if job_try > self.spec.max_tries:
            last = outcomes.error_text(job.last_error)
            return self._dead(
                job,
                decoded,
                f"tries exhausted: worker lost while running it (try {job_try - 1} of max_tries "
                f"{self.spec.max_tries}, its worker died or was cut off); last error: {last}",
                attempts=job_try - 1,
            )
        return await self._call(job, decoded, fn, job_try)

    async def _call(self, job: Picked, decoded: Decoded, fn: TaskFunction, job_try: int) -> Finish:
        log = self.job_logs.open(job.job_id, job_try)
        started = time.monotonic()
        try:
            if not self._tracing:
                record = await self._run_task(job, decoded, fn, job_try, log)
            else:
                with tracing.process_span(self.spec.name, job.job_id, decoded.function, job_try, decoded.trace) as span:
                    record = await self._run_task(job, decoded, fn, job_try, log)
                    tracing.end_try(span, TRY_OUTCOMES[record.kind])
            # How long the task ran: the events' duration_ms and the queue's run_ms total (a completed try's
            # record carries it already: one record less to build per job).
            ran_ms = round((time.monotonic() - started) * 1000)
        finally:
            self._progressed.discard(job.job_id)
            # Before the outcome is sent: its script gives the log the result's TTL.
            if self.job_logs.ended(log):
                await self.job_logs.close(log)
        return record if record.ran_ms >= 0 else dataclasses.replace(record, ran_ms=ran_ms)

    async def _run_task(self, job: Picked, decoded: Decoded, fn: TaskFunction, job_try: int, log: JobLog) -> Finish:
        ctx = {
            "redis": self._task_redis,
            "job_id": job.job_id,
            "job_try": job_try,
            "enqueue_time": datetime.fromtimestamp(decoded.enqueue_ms / 1000, tz=UTC),
            "score": job.score,
            "queue": self.spec.name,
            "worker_id": self.worker_id,
            "progress": functools.partial(self._progress, job),
            "log": self.job_logs.ctx_log(log),
        }
        start_ms = _ms()
        self.metrics.wait_q.observe(max(start_ms - scores.split_score(job.score, self.spec)[1], 0) / 1000)
        # The job's own task (``_start``); asyncio.current_task() costs several µs a job under uvloop.
        task = self._running.get(job.job_id) or asyncio.current_task()
        assert task is not None
        t0 = time.perf_counter()
        self._deadlines.start(job.job_id, task)
        timed_out = False
        try:
            bound = self.job_logs.bind(log)
            try:
                result = await fn(ctx, *decoded.args, **decoded.kwargs)
            finally:
                self.job_logs.unbind(bound)
                if timed_out := self._deadlines.end(job.job_id):
                    task.uncancel()  # ours, not a cancel request: the try goes on to its record
        except asyncio.CancelledError:
            if job.job_id in self._cancelling:
                return self._cancel(job, "cancelled while running", start_ms=start_ms)
            if self._cutting:
                return self._back(job)
            if timed_out:
                self.metrics.duration_q.observe(time.perf_counter() - t0)
                error = f"timed out after {self.spec.job_timeout:g}s"
                return self._failed(job, decoded, job_try, error, None, start_ms=start_ms)
            error = "cancelled: the task raised CancelledError"
            return self._failed(job, decoded, job_try, error, None, start_ms=start_ms)
        except Retry as exc:
            self.metrics.duration_q.observe(time.perf_counter() - t0)
            error = "the task asked for a retry"
            return self._failed(job, decoded, job_try, error, None, defer_ms=exc.defer_score, start_ms=start_ms)
        except TimeoutError as exc:  # the task's own: the job's deadline cancels (above)
            self.metrics.duration_q.observe(time.perf_counter() - t0)
            error, tb = "TimeoutError raised by the task", traceback.format_exc()
            return self._failed(job, decoded, job_try, error, tb, exc=exc, start_ms=start_ms)
        except Exception as exc:
            self.metrics.duration_q.observe(time.perf_counter() - t0)
            error, tb = f"{type(exc).__name__}: {outcomes.describe(exc)}", traceback.format_exc()
            return self._failed(job, decoded, job_try, error, tb, exc=exc, start_ms=start_ms)
        ran = time.perf_counter() - t0
        self.metrics.duration_q.observe(ran)
        mean = self._mean_run
        self._mean_run = ran if mean is None else mean + (ran - mean) * 0.05
        self._completed += 1  # counted into the metrics once per loop tick (``_step``)
        data = self._result_bytes(job, decoded, job_try, result, start_ms)
        # Whether the job may have progress or log lines stored (this try wrote some, or an earlier try may
        # have), or a try counter (put back or requeued before): only then does the outcome's script look for
        # those keys (progress and logs get the result's TTL, the counter is deleted).
        extras = job_try > 1 or log.touched or job.job_id in self._progressed or job.counted
        return Finish("ok", job.job_id, data, b"1" if extras else b"", ran_ms=round(ran * 1000))

    def _result_bytes(self, job: Picked, d: Decoded, job_try: int, result: Any, start_ms: int) -> bytes | str:
        if self.spec.retention.completed_seconds <= 0:
            return ""
        data = serialize_result(
            d.function,
            d.args,
            d.kwargs,
            job_try,
            d.enqueue_ms,
            True,
            result,
            start_ms,
            _ms(),
            f"{job.job_id}:{d.function}",
            self.spec.queue_key,
            job.job_id,
            serializer=self._dumps,
        )
        return data or ""

    async def _progress(self, job: Picked, percent: float, message: str | None = None) -> None:
        if job.job_id in self._running:  # a call after the job ended (a leaked coroutine) must not stay in the set
            self._progressed.add(job.job_id)
        progress = Progress(percent=percent, message=message, updated_at=time.time())
        stored = progress.model_dump_json()
        await self.ops.progress(job.job_id, job.job_try, stored, PROGRESS_TTL_MS, progress.percent, progress.message)

    # ----------------------------------------------------------------- outcomes (records: see ``outcomes``)

    def _failed(
        self,
        job: Picked,
        d: Decoded,
        job_try: int,
        error: str,
        tb: str | None,
        *,
        defer_ms: int | None = None,
        exc: BaseException | None = None,
        start_ms: int | None = None,
    ) -> Finish:
        if self._tracing:
            tracing.note_error(error, exc)
        if job_try >= self.spec.max_tries:
            return self._dead(job, d, error, tb, attempts=job_try, exc=exc, start_ms=start_ms)
        record, delay_ms = outcomes.retry(self.spec, job, job_try, error, tb, _ms(), defer_ms=defer_ms)
        logger.info(
            "job %s %s: try %d failed, retry in %.2fs: %s", job.job_id, d.function, job_try, delay_ms / 1e3, error
        )
        self.metrics.by_outcome["retried"].inc()
        return record

    def _dead(
        self,
        job: Picked,
        d: Decoded | None,
        error: str,
        tb: str | None = None,
        *,
        attempts: int | None = None,
        exc: BaseException | None = None,
        start_ms: int | None = None,
    ) -> Finish:
        logger.warning("job %s %s: dead: %s", job.job_id, d.function if d else "?", error)
        self.metrics.by_outcome["dead"].inc()
        return outcomes.dead(self.spec, job, d, error, tb, _ms(), attempts=attempts, exc=exc, start_ms=start_ms)

    def _cancel(self, job: Picked, reason: str, start_ms: int = 0) -> Finish:
        logger.info("job %s: %s", job.job_id, reason)
        self.metrics.by_outcome["cancelled"].inc()
        return outcomes.cancelled(self.spec, job, reason, _ms(), start_ms)

    def _back(self, job: Picked, reason: str = "drain") -> Finish:
        self.metrics.by_outcome["put_back"].inc()
        return outcomes.back(job, reason)

    # ----------------------------------------------------------------- watchdog (runs in its thread)

    def _on_loop_blocked(self, frame_locals: dict[str, Any] | None, seconds: float) -> None:
        job = (frame_locals or {}).get("job")
        if not isinstance(job, Picked):
            logger.error("event loop blocked for %.1fs outside any job", seconds)
            return
        error = (
            f"blocked the event loop for {seconds:.1f}s or more in worker {self.worker_id} (try {job.job_try}); "
            "a task must await, not block: run blocking calls with asyncio.to_thread"
        )
        logger.error("job %s %s", job.job_id, error)
        if self._blocked_reporter is not None:
            payload = json.dumps({"error": error, "attempt": job.job_try, "at": time.time(), "traceback": None})
            self._blocked_reporter.set(self.ops.keys.error(job.job_id), payload, px=RETRY_TTL_MS)
