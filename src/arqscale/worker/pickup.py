"""The worker's Redis side: pickup, heartbeat and finishing jobs, each one atomic Lua script.

See docs/design.md, "Job life cycle". Three scripts, so a busy worker makes at most one round trip
per loop tick for everything it has to tell Redis:

- ``PICKUP_LUA`` takes up to N ready jobs (paused flag, rate window, bands most urgent first) and
  returns their payloads: no second round trip per job as arq needs.
- ``FINISH_LUA`` records a batch of outcomes (success, retry, dead, put back) in one call. Every
  outcome is idempotent, so after a lost reply (Redis restarted mid-call) the worker simply sends
  the same batch again.
- ``HEARTBEAT_LUA`` renews the leases of the running jobs and the worker's own heartbeat.

Per-job keys are built inside the scripts from arq's prefixes (not declared in KEYS), as arq does:
arqscale targets a single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from arqscale.core import scores
from arqscale.core.keys import ERROR_PREFIX, PROGRESS_PREFIX, QueueKeys
from arqscale.core.spec import QueueSpec

logger = logging.getLogger("arqscale.worker")

# The try counter outlives the payload's own TTL (see producer.PAYLOAD_TTL_MS) so a retried job keeps its count.
RETRY_TTL_MS = 15 * 86_400_000
_PREFIXES = {
    "IP": in_progress_key_prefix,
    "JOB": job_key_prefix,
    "RETRY": retry_key_prefix,
    "RESULT": result_key_prefix,
    "ERR": ERROR_PREFIX,
    "PROG": PROGRESS_PREFIX,
}


def _lua(source: str) -> str:
    for name, prefix in _PREFIXES.items():
        source = source.replace(f"@{name}@", prefix)
    return source


# KEYS: queue, active, paused, rate
# ARGV: now ms, wanted, worker id, lease ms, rate max (0 = none), rate interval ms, retry ttl ms, band lows...
# Returns {status, wait_ms, then per job: id, payload|nil, try, score, last error|nil}
#   status 0 = ran, 1 = paused, 2 = rate window used up (jobs may still have been taken up to the limit).
#   wait_ms: -1, or ms until more may be taken (status 2: the end of the rate window; else the next
#   deferred job's ready time).
PICKUP_LUA = _lua("""
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then return {1, -1} end
local rate_max = tonumber(ARGV[5])
if rate_max > 0 then
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used >= rate_max then
    local ttl = redis.call('PTTL', KEYS[4])
    if ttl < 0 then redis.call('PEXPIRE', KEYS[4], ARGV[6]); ttl = tonumber(ARGV[6]) end
    return {2, ttl}
  end
  if rate_max - used < want then want = rate_max - used end
end
local out = {0, -1}
local taken = 0
local expiry = now + tonumber(ARGV[4])
for b = 8, #ARGV do
  if taken >= want then break end
  local low = tonumber(ARGV[b])
  local offset = 0
  while taken < want do
    -- Running jobs stay in the queue (arq's layout), so read a little past them.
    local chunk = want - taken + 32
    local ids = redis.call('ZRANGEBYSCORE', KEYS[1], low, low + now, 'WITHSCORES', 'LIMIT', offset, chunk)
    for i = 1, #ids, 2 do
      local id = ids[i]
      local ip = '@IP@' .. id
      if redis.call('EXISTS', ip) == 0 then
        redis.call('SET', ip, ARGV[3], 'PX', ARGV[4])
        redis.call('ZADD', KEYS[2], expiry, id)
        local rk = '@RETRY@' .. id
        local try = redis.call('INCR', rk)
        redis.call('PEXPIRE', rk, ARGV[7])
        local err = false
        if try > 1 then err = redis.call('GET', '@ERR@' .. id) end
        out[#out+1] = id
        out[#out+1] = redis.call('GET', '@JOB@' .. id)
        out[#out+1] = try
        out[#out+1] = ids[i+1]
        out[#out+1] = err
        taken = taken + 1
        if taken >= want then break end
      end
    end
    if #ids < 2 * chunk then break end
    offset = offset + chunk
  end
end
if rate_max > 0 and taken > 0 then
  redis.call('INCRBY', KEYS[4], taken)
  if redis.call('PTTL', KEYS[4]) < 0 then redis.call('PEXPIRE', KEYS[4], ARGV[6]) end
end
if taken < tonumber(ARGV[2]) then
  if rate_max > 0 and taken == want then
    -- Stopped by the rate window, not by the queue running dry.
    out[1] = 2
    out[2] = redis.call('PTTL', KEYS[4])
  else
    -- Nothing more is ready: when is the next deferred job due?
    for b = 8, #ARGV do
      local low = tonumber(ARGV[b])
      local nxt = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (low + now), '(' .. (low + @BAND@),
                             'WITHSCORES', 'LIMIT', 0, 1)
      if #nxt > 0 then
        local wait = tonumber(nxt[2]) - low - now
        if out[2] < 0 or wait < out[2] then out[2] = wait end
      end
    end
  end
end
return out
""").replace("@BAND@", str(scores.BAND))

# KEYS: queue, active, completed, dlq, dlq_index
# ARGV: now ms, completed ttl ms, completed max, failed cutoff ms, failed max, error ttl ms, failed ttl ms,
#       then records of four: kind, id, a, b
#   ok:    a = serialized result ('' = keep none)
#   retry: a = new score, b = error JSON
#   dead:  a = DeadJob JSON, b = arq's failed result ('' = keep none)
# A dead-letter entry and a failed result go together: a success under the same id (a duplicate run that
# finished after all) removes the entry, and trimming an entry deletes its result, so a requeue or purge may
# delete the result key of any id in the store.
#   back:  a = new score, b = try counter to restore (the cut-short try does not count)
FINISH_LUA = _lua("""
local now = tonumber(ARGV[1])
local n_ok, n_dead = 0, 0
for i = 8, #ARGV, 4 do
  local kind, id, a, b = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  if kind == 'ok' then
    if a ~= '' then redis.call('SET', '@RESULT@' .. id, a, 'PX', ARGV[2]) end
    redis.call('DEL', '@JOB@' .. id, '@IP@' .. id, '@RETRY@' .. id, '@ERR@' .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[3], now, id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('ZREM', KEYS[5], id)
    redis.call('PEXPIRE', '@PROG@' .. id, ARGV[2])
    n_ok = n_ok + 1
  elseif kind == 'retry' then
    redis.call('ZADD', KEYS[1], a, id)
    redis.call('DEL', '@IP@' .. id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('SET', '@ERR@' .. id, b, 'PX', ARGV[6])
  elseif kind == 'dead' then
    redis.call('HSET', KEYS[4], id, a)
    redis.call('ZADD', KEYS[5], now, id)
    if b ~= '' then redis.call('SET', '@RESULT@' .. id, b, 'PX', ARGV[7]) end
    redis.call('DEL', '@JOB@' .. id, '@IP@' .. id, '@RETRY@' .. id, '@ERR@' .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('PEXPIRE', '@PROG@' .. id, ARGV[7])
    n_dead = n_dead + 1
  elseif kind == 'back' then
    redis.call('ZADD', KEYS[1], a, id)
    redis.call('DEL', '@IP@' .. id)
    redis.call('ZREM', KEYS[2], id)
    if tonumber(b) > 0 then
      redis.call('SET', '@RETRY@' .. id, b, 'KEEPTTL')
    else
      redis.call('DEL', '@RETRY@' .. id)
    end
  end
end
if n_ok > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - tonumber(ARGV[2])))
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[3]) + 1))
end
if n_dead > 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[4], 'LIMIT', 0, 1000)
  local over = redis.call('ZCARD', KEYS[5]) - #old - tonumber(ARGV[5])
  if over > 0 then
    local extra = redis.call('ZRANGE', KEYS[5], #old, #old + math.min(over, 1000) - 1)
    for _, id in ipairs(extra) do old[#old+1] = id end
  end
  if #old > 0 then
    redis.call('HDEL', KEYS[4], unpack(old))
    redis.call('ZREM', KEYS[5], unpack(old))
    for _, id in ipairs(old) do redis.call('DEL', '@RESULT@' .. id) end
  end
end
return n_ok
""")

# KEYS: active, workers
# ARGV: now ms, lease ms, worker id, worker heartbeat expiry ms, job ids...
# Returns the ids whose lease another worker holds now (this worker lost them while it was cut off).
HEARTBEAT_LUA = _lua("""
local now = tonumber(ARGV[1])
local expiry = now + tonumber(ARGV[2])
local lost = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local ip = '@IP@' .. id
  local owner = redis.call('GET', ip)
  -- An expired lease (Redis was away, or the loop was blocked) is taken back if nobody else took it.
  if owner == false or owner == ARGV[3] then
    redis.call('SET', ip, ARGV[3], 'PX', ARGV[2])
    redis.call('ZADD', KEYS[1], expiry, id)
  else
    lost[#lost+1] = id
  end
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
-- Dead workers' entries: harmless for counting (expired scores are ignored), removed to keep sets small.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
return lost
""")


@dataclass(frozen=True, slots=True)
class Picked:
    """A job handed to this worker by the pickup script."""

    job_id: str
    payload: bytes | None
    job_try: int
    score: int
    last_error: bytes | None


@dataclass(frozen=True, slots=True)
class PickupResult:
    jobs: list[Picked]
    paused: bool = False
    rate_limited: bool = False
    wait_ms: int = -1  # -1: nothing known to become ready


FinishKind = Literal["ok", "retry", "dead", "back"]


@dataclass(frozen=True, slots=True)
class Finish:
    """One outcome for ``FINISH_LUA``; see the script for what ``a`` and ``b`` mean per kind."""

    kind: FinishKind
    job_id: str
    a: bytes | str | int = ""
    b: bytes | str | int = ""


class QueueOps:
    """The scripts bound to one queue and one worker id."""

    def __init__(self, redis: Redis, spec: QueueSpec, worker_id: str) -> None:
        self.redis = redis
        self.spec = spec
        self.worker_id = worker_id
        self.keys = QueueKeys.for_queue(spec.name, spec.queue_key)
        self.lease_ms = int(spec.lease_seconds * 1000)
        self._band_lows = [band.low for band in scores.bands(spec)]
        self._pickup = redis.register_script(PICKUP_LUA)
        self._finish = redis.register_script(FINISH_LUA)
        self._heartbeat = redis.register_script(HEARTBEAT_LUA)

    def _pickup_args(self, wanted: int, now_ms: int) -> list[int | str]:
        rate = self.spec.rate_limit
        return [
            now_ms,
            wanted,
            self.worker_id,
            self.lease_ms,
            rate.max_jobs if rate else 0,
            int(rate.interval * 1000) if rate else 0,
            RETRY_TTL_MS,
            *self._band_lows,
        ]

    def _finish_args(self, records: Sequence[Finish], now_ms: int) -> list[bytes | str | int]:
        ret = self.spec.retention
        args: list[bytes | str | int] = [
            now_ms,
            # PX 0 is an error in Redis; with completed_seconds 0 no result is written (see worker).
            max(ret.completed_seconds * 1000, 1),
            ret.completed_max,
            now_ms - ret.failed_seconds * 1000,
            ret.failed_max,
            RETRY_TTL_MS,
            max(ret.failed_seconds * 1000, 1),
        ]
        for r in records:
            args += [r.kind, r.job_id, r.a, r.b]
        return args

    async def pickup(self, wanted: int, now_ms: int) -> PickupResult:
        return parse_pickup(await self._pickup(keys=self._pickup_keys(), args=self._pickup_args(wanted, now_ms)))

    async def finish_and_pickup(
        self, records: Sequence[Finish], wanted: int, now_ms: int
    ) -> tuple[PickupResult | None, bool]:
        """Record outcomes, then take up to ``wanted`` jobs, in one round trip.

        Returns the pickup (None when nothing was wanted) and whether the records were written; when they
        were not, the caller sends them again (every outcome is idempotent).
        """
        if not records:
            return (await self.pickup(wanted, now_ms) if wanted > 0 else None), True
        async with self.redis.pipeline(transaction=False) as pipe:
            # Plain EVALSHA: redis-py's pipelined Script objects add a SCRIPT EXISTS round trip to every call.
            # After a Redis restart the script cache is empty; each command then answers NOSCRIPT on its
            # own (nothing ran), and the scripts are loaded again for the next tick.
            finish_keys, pickup_keys = self._finish_keys(), self._pickup_keys()
            pipe.execute_command(
                "EVALSHA", self._finish.sha, len(finish_keys), *finish_keys, *self._finish_args(records, now_ms)
            )
            if wanted > 0:
                pipe.execute_command(
                    "EVALSHA", self._pickup.sha, len(pickup_keys), *pickup_keys, *self._pickup_args(wanted, now_ms)
                )
            replies = await pipe.execute(raise_on_error=False)
        errors = [r for r in replies if isinstance(r, Exception)]
        picked = replies[1] if wanted > 0 else None
        result = None if picked is None or isinstance(picked, Exception) else parse_pickup(picked)
        if any(isinstance(e, NoScriptError) for e in errors):
            await self._load_scripts()
        others = [e for e in errors if not isinstance(e, NoScriptError)]
        if others and result is None:
            raise others[0]
        if others:  # jobs were taken: start them; the unwritten records go again with the next tick
            logger.error("queue %s: recording outcomes failed: %s", self.spec.name, others[0])
        return result, not isinstance(replies[0], Exception)

    async def _load_scripts(self) -> None:
        try:
            for script in (self._finish, self._pickup, self._heartbeat):
                await self.redis.script_load(script.script)
        except RedisError as exc:  # the next call answers NOSCRIPT again and comes back here
            logger.warning("queue %s: loading scripts failed: %s", self.spec.name, exc)

    async def heartbeat(self, job_ids: Sequence[str], now_ms: int, worker_ttl_ms: int) -> list[str]:
        lost = await self._heartbeat(
            keys=[self.keys.active, self.keys.workers],
            args=[now_ms, self.lease_ms, self.worker_id, now_ms + worker_ttl_ms, *job_ids],
        )
        return [x.decode() for x in lost]

    async def leave(self) -> None:
        """Remove this worker from the ``workers`` set on a clean exit."""
        await self.redis.zrem(self.keys.workers, self.worker_id)

    def _pickup_keys(self) -> list[str]:
        return [self.keys.queue, self.keys.active, self.keys.paused, self.keys.rate]

    def _finish_keys(self) -> list[str]:
        k = self.keys
        return [k.queue, k.active, k.completed, k.dlq, k.dlq_index]


def parse_pickup(raw: Sequence[object]) -> PickupResult:
    status, wait_ms = int(raw[0]), int(raw[1])  # type: ignore[call-overload]
    jobs = []
    for i in range(2, len(raw), 5):
        job_id, payload, job_try, score, err = raw[i : i + 5]
        assert isinstance(job_id, bytes)
        jobs.append(
            Picked(
                job_id=job_id.decode(),
                payload=payload if isinstance(payload, bytes) else None,
                job_try=int(job_try),  # type: ignore[call-overload]
                score=int(float(score)),  # type: ignore[arg-type]
                last_error=err if isinstance(err, bytes) else None,
            )
        )
    return PickupResult(jobs=jobs, paused=status == 1, rate_limited=status == 2, wait_ms=wait_ms)
