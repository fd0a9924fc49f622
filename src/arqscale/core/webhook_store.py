"""The Redis side of webhook delivery: pending deliveries, their leases and retries, and the dead store.

Per queue, under ``arqscale:<queue>:webhooks:``:

- ``pending`` (hash delivery id -> ``Delivery`` JSON) and ``due`` (zset delivery id -> ms when it may be
  sent next; while a deliverer holds it, when its lease runs out): every delivery not yet made.
- ``dead`` (hash delivery id -> ``DeadDelivery`` JSON) and ``dead:index`` (zset id -> failed ms): deliveries
  whose attempts ran out (or whose address is refused), kept with the queue's ``retention.failed_*``.

A delivery's id is its ``webhook-id`` header: ``<queue>:<event stream id>:<endpoint>``, the same on every
attempt and after any restart, so a receiver dedupes on it.

The deliverer reads the queue's event stream (``arqscale:<queue>:events``) through the consumer group
``GROUP`` and turns each entry into deliveries with ``INGEST_LUA``, which writes them and acknowledges the
entry in one step: an entry is either still unacknowledged in the group (read again after a crash) or its
deliveries are here, never neither. Sending takes a lease (``TAKE_LUA``), so a deliverer killed mid-request
leaves the delivery to be taken again when the lease runs out: at least once, never lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys
from arqscale.core.lua import NOW_LUA, LuaScript, run_scripts
from arqscale.core.spec import QueueSpec

GROUP = "arqscale-webhooks"
DEFAULT_PAGE = 50
MAX_PAGE = 1000
TRIM_MAX = 100  # dead entries trimmed by one failure, at most (each failure adds one: it keeps up)


@dataclass(frozen=True, slots=True)
class WebhookKeys:
    due: str
    pending: str
    dead: str
    dead_index: str

    @classmethod
    def for_queue(cls, queue: QueueKeys | str) -> WebhookKeys:
        """The webhook keys of a queue (its ``QueueKeys``, or its name in arq's layout)."""
        base = (f"arqscale:{queue}:" if isinstance(queue, str) else queue.base) + "webhooks:"
        return cls(due=base + "due", pending=base + "pending", dead=base + "dead", dead_index=base + "dead:index")


def delivery_id(queue: str, event_id: str, endpoint: str) -> str:
    return f"{queue}:{event_id}:{endpoint}"


class Delivery(BaseModel):
    """One event for one endpoint, until it is delivered or dead."""

    id: str = Field(description="the webhook-id header: <queue>:<event stream id>:<endpoint>")
    queue: str
    endpoint: str = Field(description="the endpoint's name in the queue's webhooks, or callback")
    url: str | None = Field(default=None, description="per-job callbacks: the job's URL (endpoints: from the spec)")
    event: str
    job_id: str
    body: str = Field(description="the JSON body sent, the same bytes on every attempt")
    attempts: int = 0
    created_at: float = Field(description="epoch seconds")
    last_error: str | None = None


class DeadDelivery(Delivery):
    failed_at: float = Field(description="epoch seconds of the last attempt")


class DeadDeliveryList(BaseModel):
    queue: str
    total: int
    offset: int
    items: list[DeadDelivery]


class DeadDeliveryRetry(BaseModel):
    queue: str
    retried: list[str]
    missing: list[str] = Field(default_factory=list)


class DeadDeliveryPurge(BaseModel):
    queue: str
    deleted: int


# KEYS: stream, due, pending.  ARGV: group, number of entry ids n, the n ids, then pairs: delivery id, JSON.
# A delivery that exists already is left as it is (HSETNX); the entries are acknowledged in the same step.
INGEST_LUA = LuaScript(
    NOW_LUA
    + """
local n = tonumber(ARGV[2])
local created = 0
for i = 3 + n, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i+1]) == 1 then
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    created = created + 1
  end
end
if n > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3, 2 + n)) end
return created
"""
)

# KEYS: due, pending.  ARGV: most to take, lease ms.  Returns the due deliveries' JSON, each now leased.
TAKE_LUA = LuaScript(
    NOW_LUA
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local d = redis.call('HGET', KEYS[2], id)
  if d then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    out[#out+1] = d
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""
)

# KEYS: due, pending.  ARGV: delivery id.
DONE_LUA = LuaScript(
    """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
"""
)

# KEYS: due, pending, dead, dead index.  ARGV: id, delivery JSON, delay ms (-1: dead), dead JSON, failed ttl ms,
# failed max.  A delivery another deliverer made meanwhile (gone from pending) is left alone (returns 0).
FAIL_LUA = LuaScript(
    NOW_LUA
    + """
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[2], id) == 0 then return 0 end
local delay = tonumber(ARGV[3])
if delay >= 0 then
  redis.call('HSET', KEYS[2], id, ARGV[2])
  redis.call('ZADD', KEYS[1], now + delay, id)
  return 1
end
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[1], id)
redis.call('HSET', KEYS[3], id, ARGV[4])
redis.call('ZADD', KEYS[4], now, id)
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - tonumber(ARGV[5])), 'LIMIT', 0, @TRIM@)
local over = redis.call('ZCARD', KEYS[4]) - #old - tonumber(ARGV[6])
if over > 0 then
  for _, x in ipairs(redis.call('ZRANGE', KEYS[4], #old, #old + math.min(over, @TRIM@) - 1)) do old[#old+1] = x end
end
if #old > 0 then
  redis.call('HDEL', KEYS[3], unpack(old))
  redis.call('ZREM', KEYS[4], unpack(old))
end
return 2
""".replace("@TRIM@", str(TRIM_MAX))
)

# KEYS: due, pending, dead, dead index.  ARGV: ids.  Each dead delivery back to pending, attempts from 0, due now.
RETRY_DEAD_LUA = LuaScript(
    NOW_LUA
    + """
local out = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  local d = redis.call('HGET', KEYS[3], id)
  if d then
    local v = cjson.decode(d)
    v['failed_at'] = nil
    v['attempts'] = 0
    redis.call('HSET', KEYS[2], id, cjson.encode(v))
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
    out[#out+1] = id
  end
end
return out
"""
)


class WebhookStore:
    """One queue's deliveries and dead store."""

    def __init__(self, redis: Redis, spec: QueueSpec) -> None:
        self.redis = redis
        self.spec = spec
        queue_keys = QueueKeys.of(spec, redis)
        self.keys = WebhookKeys.for_queue(queue_keys)
        self.stream = queue_keys.events
        self._atomic = not queue_keys.cluster  # MULTI where the client has it (a cluster client has none)

    def _dead_keys(self) -> list[str]:
        return [self.keys.due, self.keys.pending, self.keys.dead, self.keys.dead_index]

    async def ingest(self, entry_ids: list[str], deliveries: list[Delivery]) -> int:
        args: list[Any] = [GROUP, len(entry_ids), *entry_ids]
        for d in deliveries:
            args += [d.id, d.model_dump_json()]
        keys = [self.stream, self.keys.due, self.keys.pending]
        [created] = await run_scripts(self.redis, [(INGEST_LUA, keys, args)])
        return int(created)

    async def take(self, most: int, lease_ms: int) -> list[Delivery]:
        [raw] = await run_scripts(self.redis, [(TAKE_LUA, [self.keys.due, self.keys.pending], [most, lease_ms])])
        return [Delivery.model_validate_json(r) for r in raw]

    async def done(self, delivery: Delivery) -> None:
        await run_scripts(self.redis, [(DONE_LUA, [self.keys.due, self.keys.pending], [delivery.id])])

    async def failed(self, delivery: Delivery, error: str, delay_ms: int | None, now_s: float) -> int:
        """Count the attempt; ``delay_ms`` None: it goes to the dead store. 0: made elsewhere, 1: retry, 2: dead."""
        updated = delivery.model_copy(update={"attempts": delivery.attempts + 1, "last_error": error})
        dead = DeadDelivery(**updated.model_dump(), failed_at=now_s)
        retention = self.spec.retention
        args: list[Any] = [
            delivery.id,
            updated.model_dump_json(),
            -1 if delay_ms is None else max(delay_ms, 0),
            dead.model_dump_json(),
            max(retention.failed_seconds, 1) * 1000,
            retention.failed_max,
        ]
        [code] = await run_scripts(self.redis, [(FAIL_LUA, self._dead_keys(), args)])
        return int(code)

    async def pending_count(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hlen(self.keys.pending)
            [count] = await pipe.execute()
        return int(count)

    # -- the dead store (API, CLI) -----------------------------------------------------------------------

    async def dead_page(self, offset: int = 0, limit: int = DEFAULT_PAGE) -> DeadDeliveryList:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.dead_index)
            pipe.zrevrange(self.keys.dead_index, offset, offset + limit - 1)
            total, ids = await pipe.execute()
        items = await self._dead_items([i.decode() for i in ids])
        return DeadDeliveryList(queue=self.spec.name, total=int(total), offset=offset, items=items)

    async def dead_one(self, delivery: str) -> DeadDelivery | None:
        items = await self._dead_items([delivery])
        return items[0] if items else None

    async def _dead_items(self, ids: list[str]) -> list[DeadDelivery]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.dead, ids)
            [raw] = await pipe.execute()
        out = []
        for r in raw:
            if r is None:
                continue
            try:
                out.append(DeadDelivery.model_validate_json(r))
            except ValueError:
                continue  # written by hand or by another version: not shown rather than failing the page
        return out

    async def retry_dead(self, ids: list[str] | None = None) -> DeadDeliveryRetry:
        """Send dead deliveries again (all when ``ids`` is None), attempts counted from 0."""
        wanted = ids if ids is not None else [i.decode() for i in await self.redis.zrange(self.keys.dead_index, 0, -1)]
        retried: list[str] = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            [done] = await run_scripts(self.redis, [(RETRY_DEAD_LUA, self._dead_keys(), chunk)])
            retried += [d.decode() if isinstance(d, bytes) else str(d) for d in done]
        missing = [i for i in wanted if i not in set(retried)]
        return DeadDeliveryRetry(queue=self.spec.name, retried=retried, missing=missing)

    async def purge_dead(self, ids: list[str] | None = None) -> DeadDeliveryPurge:
        """Delete dead deliveries (all when ``ids`` is None)."""
        if ids is None:
            async with self.redis.pipeline(transaction=self._atomic) as pipe:
                pipe.hlen(self.keys.dead)
                pipe.delete(self.keys.dead, self.keys.dead_index)
                count, _ = await pipe.execute()
            return DeadDeliveryPurge(queue=self.spec.name, deleted=int(count))
        async with self.redis.pipeline(transaction=self._atomic) as pipe:
            pipe.hdel(self.keys.dead, *ids)
            pipe.zrem(self.keys.dead_index, *ids)
            count, _ = await pipe.execute()
        return DeadDeliveryPurge(queue=self.spec.name, deleted=int(count))


def parse_fields(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
