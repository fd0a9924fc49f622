"""The deliverer: event streams in, signed HTTP calls out, at least once.

Per queue with webhooks, an **ingest loop** reads the queue's event stream through the consumer group
``webhook_store.GROUP`` and turns each entry into deliveries (``payload.deliveries``): ``READ_LUA`` reads a
batch and, in the same step, tells whether entries were trimmed from the stream before the group read them
(Redis 7.0 trims by length, not by acknowledgement: a deliverer down for longer than the stream's cap lasts
loses events, and this says so, in the log and in ``arqscale_webhooks_stream_gaps_total``).
``WebhookStore.ingest`` stores the deliveries and acknowledges the entries in one script. Entries read but not
stored (the process died between the two) stay in the group's pending list: this consumer reads them again
at start (``0``), and any consumer claims them once idle for ``claim_idle`` (``XAUTOCLAIM``).

The **send loop** takes due deliveries under a lease (``WebhookStore.take``) and sends each (``Sender``); a
success deletes it, a failure schedules the next attempt with exponential backoff or, after the queue's
``webhooks.retry.max_attempts`` (or at once for a refused address), moves it to the dead store. A deliverer
killed mid-request leaves its leases to run out: the deliveries are sent again, with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from arqscale.core import keys
from arqscale.core.events import Fields, split_entry
from arqscale.core.health import Health
from arqscale.core.lua import LuaScript, run_scripts
from arqscale.core.spec import QueueSpec
from arqscale.core.webhook_spec import CALLBACK_ENDPOINT, SecretError, WebhookRetry, load_secret
from arqscale.core.webhook_store import GROUP, Delivery, WebhookStore, parse_fields
from arqscale.webhooks import payload
from arqscale.webhooks.addresses import IPNetwork
from arqscale.webhooks.metrics import WebhookMetrics
from arqscale.webhooks.sender import Attempt, Sender

logger = logging.getLogger("arqscale.webhooks")

REDIS_RETRY_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0)

# KEYS: stream.  ARGV: group, consumer, count, start id ('>' new entries, '0' this consumer's pending ones).
# Returns {lost, the group's last-delivered id before this read, the stream's first id, lag (-1: unknown),
# entries (XREADGROUP's reply, or false)}. lost: entries added after the group's last read that are no longer
# in the stream (trimmed before the group read them). Redis 7.0 does not record trimming in
# max-deleted-entry-id, so it is counted: when every entry left is unread (the first one comes after the
# group's position), entries-added - the group's entries-read - length were removed unread.
READ_LUA = LuaScript(
    """
local function field(arr, name)
  for i = 1, #arr, 2 do if arr[i] == name then return arr[i + 1] end end
  return false
end
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  return am < bm or (am == bm and as < bs)
end
local last, lag, read = false, -1, false
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  if field(g, 'name') == ARGV[1] then
    last = field(g, 'last-delivered-id')
    read = field(g, 'entries-read')
    local l = field(g, 'lag')
    if l then lag = l end
  end
end
if not last then return redis.error_reply('NOGROUP no webhook consumer group on ' .. KEYS[1]) end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local first = field(info, 'recorded-first-entry-id') or '0-0'
local length = tonumber(field(info, 'length')) or 0
local lost = 0
if ARGV[4] == '>' and read and (length == 0 or before(last, first)) then
  lost = math.max(tonumber(field(info, 'entries-added')) - tonumber(read) - length, 0)
end
local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], ARGV[4])
return {lost, last, first, lag, got}
"""
)


@dataclass
class DelivererOptions:
    consumer: str
    allowed: tuple[IPNetwork, ...] = ()
    concurrency: int = 50
    batch: int = 100
    claim_idle_seconds: float = 60.0
    read_block_ms: int = 1000
    poll_seconds: float = 0.2
    drain_seconds: float = 10.0
    status_seconds: float = 5.0


@dataclass
class _Queue:
    spec: QueueSpec
    store: WebhookStore
    secrets: dict[str, bytes] = field(default_factory=dict)  # endpoint name (or "callback") -> key
    reported_gap: str | None = None

    @property
    def retry(self) -> WebhookRetry:
        assert self.spec.webhooks is not None
        return self.spec.webhooks.retry


def webhook_queues(specs: Mapping[str, QueueSpec]) -> dict[str, QueueSpec]:
    return {n: s for n, s in specs.items() if s.backend == "arq" and s.webhooks is not None and s.webhooks.active}


def load_secrets(spec: QueueSpec) -> dict[str, bytes]:
    """Every signing key of the queue, read once at start-up (SecretError names the place, never the value)."""
    hooks = spec.webhooks
    assert hooks is not None
    secrets = {}
    for name, endpoint in hooks.endpoints.items():
        try:
            secrets[name] = load_secret(endpoint)
        except SecretError as exc:
            raise SecretError(f"queue {spec.name!r}, endpoint {name!r}: {exc}") from None
    if hooks.callbacks is not None:
        try:
            secrets[CALLBACK_ENDPOINT] = load_secret(hooks.callbacks)
        except SecretError as exc:
            raise SecretError(f"queue {spec.name!r}, callbacks: {exc}") from None
    return secrets


def backoff_ms(retry: WebhookRetry, attempts: int, rand: random.Random | None = None) -> int:
    """Wait after the ``attempts``-th failed attempt: ``initial_delay * 2**(attempts-1)``, capped, plus up to 10%."""
    base = min(retry.initial_delay * 2 ** min(attempts - 1, 60), retry.max_delay)
    return int(base * (1 + 0.1 * (rand or random).random()) * 1000)


class Deliverer:
    def __init__(
        self,
        redis: Redis,
        specs: Mapping[str, QueueSpec],
        options: DelivererOptions,
        *,
        metrics: WebhookMetrics | None = None,
        health: Health | None = None,
        secrets: Mapping[str, dict[str, bytes]] | None = None,
    ) -> None:
        self.redis = redis
        self.options = options
        self.metrics = metrics or WebhookMetrics()
        self.health = health or Health(redis_unreachable_seconds=60.0)
        self.queues = {
            name: _Queue(spec, WebhookStore(redis, spec), dict(secrets[name]) if secrets else load_secrets(spec))
            for name, spec in webhook_queues(specs).items()
        }
        self.sender = Sender(options.allowed)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: dict[str, tuple[WebhookStore, asyncio.Task[None]]] = {}
        self._failures = 0

    # -- life cycle ----------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            logger.info("stopping: no more reads; %d delivery attempt(s) under way", len(self._in_flight))
        self.health.draining = True
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        loops = [asyncio.create_task(self._ingest_loop(q), name=f"ingest {n}") for n, q in self.queues.items()]
        loops.append(asyncio.create_task(self._status_loop(), name="status"))
        sender = asyncio.create_task(self._send_loop(), name="send")
        try:
            await self._stopping.wait()
        finally:
            for task in loops:
                task.cancel()  # safe anywhere: an entry read but not stored stays pending in the group
            await asyncio.gather(*loops, return_exceptions=True)
            await sender
            await self._finish_in_flight()
            await self.sender.close()
        logger.info("webhook deliverer %s stopped", self.options.consumer)

    async def _finish_in_flight(self) -> None:
        tasks = [t for _, t in self._in_flight.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.options.drain_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        # Cut short: hand them back at once rather than when their leases run out.
        for delivery_id, (store, _) in list(self._in_flight.items()):
            with contextlib.suppress(RedisError, OSError):
                await self.redis.zadd(store.keys.due, {delivery_id: 0}, xx=True)

    def _redis_failed(self, exc: BaseException) -> float:
        if self.health.redis_down_since is None:
            logger.warning("redis unreachable (%s: %s); retrying", type(exc).__name__, exc)
        self.health.redis_failed(exc)
        self.metrics.redis_up.set(0)
        delay = REDIS_RETRY_SECONDS[min(self._failures, len(REDIS_RETRY_SECONDS) - 1)]
        self._failures += 1
        return delay

    def _redis_ok(self) -> None:
        if self.health.redis_down_since is not None:
            logger.info("redis reachable again after %.1fs", self.health.redis_down_for())
        self.health.redis_ok()
        self._failures = 0
        self.metrics.redis_up.set(1)

    # -- reading the event streams -------------------------------------------------------------------------

    async def _create_group(self, queue: _Queue, start: str) -> None:
        try:
            await self.redis.xgroup_create(queue.store.stream, GROUP, id=start, mkstream=True)
            logger.info("queue %s: webhook consumer group created at %s", queue.spec.name, start)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _ingest_loop(self, queue: _Queue) -> None:
        # The group starts at the stream's end the first time: webhooks are for events from then on.
        created = False
        start = "0"  # this consumer's own pending entries first (read before a crash, never stored)
        last_claim = 0.0
        while not self._stopping.is_set():
            try:
                if not created:
                    await self._create_group(queue, "$")
                    created = True
                if time.monotonic() - last_claim >= self.options.claim_idle_seconds / 2:
                    await self._claim(queue)
                    last_claim = time.monotonic()
                entries, last = await self._read(queue, start)
                self._redis_ok()
                self.health.started = True
                if entries:
                    await self._ingest(queue, entries)
                    continue
                if start == "0":
                    start = ">"
                    continue
                # Nothing new: wait for the stream to grow past what the group has read (or a timeout).
                await self.redis.xread({queue.store.stream: last}, count=1, block=self.options.read_block_ms)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # The group is gone (Redis lost its data, or the stream was deleted): start again from the
                    # beginning of whatever stream there is now.
                    logger.warning("queue %s: webhook consumer group missing; recreating it", queue.spec.name)
                    with contextlib.suppress(RedisError, OSError):
                        await self._create_group(queue, "0")
                    continue
                await asyncio.sleep(self._redis_failed(exc))
            except (RedisError, OSError) as exc:
                await asyncio.sleep(self._redis_failed(exc))

    async def _read(self, queue: _Queue, start: str) -> tuple[list[tuple[str, Fields | None]], str]:
        args = [GROUP, self.options.consumer, self.options.batch, start]
        [reply] = await run_scripts(self.redis, [(READ_LUA, [queue.store.stream], args)])
        lost, last, first, lag = int(reply[0]), _text(reply[1]), _text(reply[2]), int(reply[3])
        self.metrics.lag.labels(queue.spec.name).set(lag)
        if lost and queue.reported_gap != last:
            queue.reported_gap = last
            self.metrics.gaps.labels(queue.spec.name).inc()
            self.metrics.lost.labels(queue.spec.name).inc(lost)
            logger.error(
                "queue %s: %d event(s) after %s (the stream now starts at %s) were trimmed from %s before the "
                "webhook deliverers read them: their webhooks are lost. Raise the stream's cap, or keep a "
                "deliverer running",
                queue.spec.name,
                lost,
                last,
                first,
                queue.store.stream,
            )
        entries: list[tuple[str, Fields | None]] = []
        for _stream, items in reply[4] or []:
            for entry_id, fields in items:
                entries.append((_text(entry_id), _pairs(fields)))
        return entries, last

    async def _claim(self, queue: _Queue) -> None:
        """Entries another consumer read and never stored (it died): ours once idle for ``claim_idle``."""
        cursor = "0-0"
        idle_ms = int(self.options.claim_idle_seconds * 1000)
        while True:
            reply = await self.redis.xautoclaim(
                queue.store.stream, GROUP, self.options.consumer, idle_ms, cursor, count=self.options.batch
            )
            cursor, claimed = _text(reply[0]), reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            entries = [(_text(i), _pairs(f)) for i, f in claimed]
            if entries:
                logger.info("queue %s: claimed %d event(s) a stopped deliverer had read", queue.spec.name, len(entries))
                await self._ingest(queue, entries)
            if deleted:
                self._lost(queue, len(deleted))
            if cursor == "0-0":
                return

    def _lost(self, queue: _Queue, count: int) -> None:
        self.metrics.gaps.labels(queue.spec.name).inc()
        self.metrics.lost.labels(queue.spec.name).inc(count)
        logger.error(
            "queue %s: %d event(s) read by a deliverer were trimmed from the stream before their webhooks were "
            "stored: those webhooks are lost. Raise the stream's cap",
            queue.spec.name,
            count,
        )

    async def _ingest(self, queue: _Queue, entries: list[tuple[str, Fields | None]]) -> None:
        spec = queue.spec
        hooks = spec.webhooks
        assert hooks is not None
        trimmed = sum(1 for _, f in entries if f is None)
        if trimmed:
            self._lost(queue, trimmed)
        # One delivery per event: a batched entry holds many (events.split_entry); entries are acknowledged whole.
        present = [(i, parse_fields(one)) for e, f in entries if f is not None for i, one in split_entry(e, f)]
        callbacks: dict[str, str] = {}
        if hooks.callbacks is not None:
            jobs = sorted({f.get("job", "") for _, f in present if f.get("event") in hooks.callbacks.events})
            if jobs:
                urls = await self.redis.mget([keys.QueueKeys.of(spec, self.redis).callback(j) for j in jobs])
                callbacks = {j: _text(u) for j, u in zip(jobs, urls, strict=True) if u is not None}
        deliveries: list[Delivery] = []
        for entry_id, fields in present:
            deliveries += payload.deliveries(spec, entry_id, fields, callbacks.get(fields.get("job", "")))
        created = await queue.store.ingest([i for i, _ in entries], deliveries)
        self.metrics.events.labels(spec.name).inc(len(present) + trimmed)
        if created:
            self._wake.set()

    # -- sending -------------------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while not self._stopping.is_set():
            free = self.options.concurrency - len(self._in_flight)
            try:
                for queue in self.queues.values():
                    if free <= 0:
                        break
                    lease_ms = int((2 * queue.retry.timeout_seconds + 1) * 1000)  # an attempt ends within its timeout
                    for delivery in await queue.store.take(free, lease_ms):
                        self._start(queue, delivery)
                        free -= 1
                self._redis_ok()
            except (RedisError, OSError) as exc:
                await asyncio.sleep(self._redis_failed(exc))
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.poll_seconds)

    def _start(self, queue: _Queue, delivery: Delivery) -> None:
        if delivery.id in self._in_flight:
            return  # our own attempt outlived its lease and we took it again: let the first one finish
        task = asyncio.create_task(self._deliver(queue, delivery))
        self._in_flight[delivery.id] = (queue.store, task)
        self.metrics.in_flight.inc()

        def forget(_: asyncio.Task[None]) -> None:
            self._in_flight.pop(delivery.id, None)
            self.metrics.in_flight.dec()
            self._wake.set()

        task.add_done_callback(forget)

    def _target(self, queue: _Queue, delivery: Delivery) -> tuple[str, bytes] | str:
        hooks = queue.spec.webhooks
        assert hooks is not None
        key = queue.secrets.get(delivery.endpoint)
        if delivery.endpoint == CALLBACK_ENDPOINT:
            if hooks.callbacks is None or key is None or not delivery.url:
                return "callbacks are no longer allowed on this queue"
            return delivery.url, key
        endpoint = hooks.endpoints.get(delivery.endpoint)
        if endpoint is None or key is None:
            return f"endpoint {delivery.endpoint!r} is no longer configured"
        return endpoint.url, key

    async def _deliver(self, queue: _Queue, delivery: Delivery) -> None:
        target = self._target(queue, delivery)
        retry = queue.retry
        if isinstance(target, str):
            result = Attempt(False, target, refused=True)
        else:
            url, key = target
            t0 = time.perf_counter()
            result = await self.sender.send(url, delivery.id, key, delivery.body.encode(), retry.timeout_seconds)
            self.metrics.duration.labels(queue.spec.name).observe(time.perf_counter() - t0)
        attempts = delivery.attempts + 1
        name = queue.spec.name
        if result.ok:
            outcome = "delivered"
            await self._settle(lambda: queue.store.done(delivery))
        elif result.refused or attempts >= retry.max_attempts:
            outcome = "refused" if result.refused else "dead"
            logger.warning(
                "queue %s: webhook %s to %s undeliverable after %d attempt(s), moved to the dead store: %s",
                name,
                delivery.id,
                delivery.endpoint,
                attempts,
                result.error,
            )
            await self._settle(lambda: queue.store.failed(delivery, result.error or "failed", None, time.time()))
        else:
            outcome = "retried"
            delay = backoff_ms(retry, attempts)
            logger.info(
                "queue %s: webhook %s to %s failed (attempt %d of %d), next in %.1fs: %s",
                name,
                delivery.id,
                delivery.endpoint,
                attempts,
                retry.max_attempts,
                delay / 1000,
                result.error,
            )
            await self._settle(lambda: queue.store.failed(delivery, result.error or "failed", delay, time.time()))
        self.metrics.deliveries.labels(name, delivery.endpoint, outcome).inc()

    async def _settle(self, call: Callable[[], Awaitable[Any]]) -> None:
        """Record an attempt's outcome, retrying while Redis is away. Given up (stopping, or Redis away for
        long): the lease runs out and the delivery is made again, which at-least-once allows."""
        for attempt in range(40):
            try:
                await call()
                self._redis_ok()
                return
            except (RedisError, OSError) as exc:
                if self._stopping.is_set() and attempt >= 2:
                    return
                await asyncio.sleep(self._redis_failed(exc))

    # -- status --------------------------------------------------------------------------------------------

    async def _status_loop(self) -> None:
        """Redis' health (also with no queue to serve: the probes and the log say when it is away) and the
        pending and dead gauges, every ``status_seconds``."""
        while not self._stopping.is_set():
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.execute_command("PING")  # by name: a cluster pipeline refuses pipe.ping()
                    for queue in self.queues.values():
                        pipe.hlen(queue.store.keys.pending)
                        pipe.zcard(queue.store.keys.dead_index)
                    replies = await pipe.execute()
            except (RedisError, OSError) as exc:
                wait = min(self._redis_failed(exc), self.options.status_seconds)
            else:
                self._redis_ok()
                if not self.queues:
                    self.health.started = True
                for n, queue in enumerate(self.queues.values()):
                    self.metrics.pending.labels(queue.spec.name).set(replies[1 + 2 * n])
                    self.metrics.dead.labels(queue.spec.name).set(replies[2 + 2 * n])
                wait = self.options.status_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _pairs(fields: Any) -> Fields | None:
    """An entry's fields as Redis sent them (decoded per event, after ``split_entry``); None when trimmed."""
    if not fields:
        return None  # a pending entry whose data was trimmed away
    if isinstance(fields, dict):
        return fields
    return {fields[i]: fields[i + 1] for i in range(0, len(fields) - 1, 2)}
