"""Running Lua scripts in one round trip.

redis-py's ``Script`` objects send ``SCRIPT EXISTS`` before every pipeline that holds one: a second
round trip on every call. arqscale sends plain ``EVALSHA`` and loads a script only when Redis answers
``NOSCRIPT`` (first use, or after a restart emptied the script cache). When a script is missing
nothing has run, so running the calls again is safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from arqscale.core.events import EVENTS_LUA
from arqscale.core.scores import BAND, PARK, PARKED_FLOOR


@dataclass(frozen=True)
class LuaScript:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest())


Call = tuple[LuaScript, Sequence[Any], Sequence[Any]]  # script, keys, args


async def run_scripts(redis: Redis, calls: Sequence[Call], then: Sequence[Sequence[Any]] = ()) -> list[Any]:
    """Run the calls in one pipelined round trip (two when a script had to be loaded first).

    ``then``: plain commands sent after the scripts on the same connection, their replies appended (a
    ``WAIT`` must follow the writes on their own connection: it counts that connection's writes only)."""
    for attempt in (1, 2):
        pipe = redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        for command in then:
            pipe.execute_command(*command)
        try:
            return list(await pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            for source in {script.source for script, _, _ in calls}:
                await redis.script_load(source)
    raise AssertionError("unreachable")  # pragma: no cover


# Redis keeps the time: every script that needs "now" reads Redis' clock, never the caller's (pods
# disagree by seconds, and a clock ahead would make other workers' live leases look expired). Rounded
# to the ms as arq rounds its own timestamps, so a plain arq job is ready in the ms it was enqueued.
NOW_LUA = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000 + 0.5)
"""

# The ownership record of a running job, and what every script does with it (docs/design.md, Ownership):
# ``arq:in-progress:<id>`` = "<queue score> <token>". arq only checks that the key exists.
# ``band_of``: the priority band a score sits in (nearest band, as ``scores.split_score``).
# ``sweep``: return up to ``limit`` jobs whose lease expired (their worker died or stalled) from their
# parking place (``scores.PARK``) to their own score, so they keep their place in line; returns how many.
# Each one returned writes its ``requeued`` event (reason ``stalled``). Includes ``events.EVENTS_LUA``.
LEASE_LUA = (
    EVENTS_LUA
    + """
local function lease_of(id)
  local v = redis.call('GET', '@IP@' .. id)
  if not v then return nil, nil end
  local sp = string.find(v, ' ', 1, true)
  if not sp then return nil, nil end
  return string.sub(v, 1, sp - 1), string.sub(v, sp + 1)
end
local function band_of(score)
  return math.floor((score + @HALF@) / @BAND@) * @BAND@
end
-- Per-key limits (docs/design.md, "Per-key limits"). ``gbase`` is the queue's ``arqscale:<queue>:g:`` prefix,
-- set by the scripts that get it ('' = leave groups alone). Under it: ``running`` (hash key -> running jobs),
-- ``run`` (hash id -> key of each running keyed job: written at pickup, removed by the first outcome or sweep
-- that ends the lease, so a key's slot is released exactly once), ``held`` (hash id -> key of each job held
-- back by its key's limit), ``wait:<key>`` (zset id -> queue score: the held jobs), ``starts:<key>`` (the
-- key's sliding rate window), ``timers`` (zset key -> ms when its held jobs should be looked at again) and
-- ``index`` (zset of the keys with running or held jobs, by name, for listing), and ``pend`` (hash id -> key)
-- with ``pending`` (hash key -> count): keyed jobs our producer or a release put in the queue, not yet picked,
-- so an enqueue can tell that a key's slots are already spoken for and hold a burst back from the start.
local gbase = ''
local function group_tidy(k)
  if redis.call('HEXISTS', gbase .. 'running', k) == 0 and redis.call('EXISTS', gbase .. 'wait:' .. k) == 0 then
    redis.call('ZREM', gbase .. 'index', k)
    redis.call('ZREM', gbase .. 'timers', k)
  end
end
-- Up to n held jobs of key k back into the queue, each under its own score (its place in line).
local function group_back(kq, k, n)
  local popped = redis.call('ZPOPMIN', gbase .. 'wait:' .. k, n)
  for i = 1, #popped, 2 do
    redis.call('ZADD', kq, popped[i+1], popped[i])
    redis.call('HDEL', gbase .. 'held', popped[i])
    redis.call('HSET', gbase .. 'pend', popped[i], k)
    redis.call('HINCRBY', gbase .. 'pending', k, 1)
  end
  return #popped / 2
end
-- Job id left the queue (picked, held, cancelled): it no longer speaks for one of its key's slots.
local function group_unpend(id)
  local k = redis.call('HGET', gbase .. 'pend', id)
  if not k then return end
  redis.call('HDEL', gbase .. 'pend', id)
  if redis.call('HINCRBY', gbase .. 'pending', k, -1) <= 0 then redis.call('HDEL', gbase .. 'pending', k) end
end
-- A lease ended (any outcome, or the sweep): free its key's slot and let one held job of the key back.
-- Whether `run` exists, read once per call: a queue without `group:` (or with no keyed job running) then pays
-- no HGET per outcome or swept lease. Within one call `run` only grows where grun_live is set to true below.
local grun_live = nil
local function group_release(kq, id)
  if gbase == '' then return end
  if grun_live == nil then grun_live = redis.call('EXISTS', gbase .. 'run') == 1 end
  if not grun_live then return end
  local k = redis.call('HGET', gbase .. 'run', id)
  if not k then return end
  redis.call('HDEL', gbase .. 'run', id)
  if redis.call('HINCRBY', gbase .. 'running', k, -1) <= 0 then redis.call('HDEL', gbase .. 'running', k) end
  group_back(kq, k, 1)
  group_tidy(k)
end
-- nil when key k may start one more job; else the ms when it should be looked at again.
local function group_full(k, conc, rate, win, lease)
  if conc > 0 and tonumber(redis.call('HGET', gbase .. 'running', k) or '0') >= conc then
    -- A finishing job lets one back at once; the timer only guards against a lost link in that chain.
    return now + lease
  end
  if rate > 0 then
    local sk = gbase .. 'starts:' .. k
    redis.call('ZREMRANGEBYSCORE', sk, '-inf', now - win)
    if redis.call('ZCARD', sk) >= rate then
      local first = redis.call('ZRANGE', sk, 0, 0, 'WITHSCORES')
      return math.max(tonumber(first[2]) + win, now + 1)
    end
  end
  return nil
end
-- Hold job id (queue score `score`) of key k until `due` or until a job of k ends.
local function group_hold(id, score, k, due)
  redis.call('ZADD', gbase .. 'wait:' .. k, score, id)
  redis.call('HSET', gbase .. 'held', id, k)
  redis.call('ZADD', gbase .. 'index', 0, k)
  local t = redis.call('ZSCORE', gbase .. 'timers', k)
  if not t or tonumber(t) > due then redis.call('ZADD', gbase .. 'timers', due, k) end
end
local function sweep(kq, ka, limit)
  local expired = redis.call('ZRANGEBYSCORE', ka, '-inf', '(' .. now, 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    local score, owner = lease_of(id)
    redis.call('ZREM', ka, id)
    group_release(kq, id)
    local queued = redis.call('ZSCORE', kq, id)
    local back = false
    if queued and tonumber(queued) >= @FLOOR@ then
      -- Parked while it ran: back under its own score (its place in line), ownership gone.
      redis.call('ZADD', kq, score or string.format('%d', tonumber(queued) - @PARK@), id)
      redis.call('DEL', '@IP@' .. id)
      back = true
    elseif not queued and redis.call('EXISTS', '@JOB@' .. id) == 1 then
      -- Its queue entry is gone (a worker from before this protocol, or removed by hand): ready now.
      redis.call('ZADD', kq, score or now, id)
      redis.call('DEL', '@IP@' .. id)
      back = true
    end
    if back then
      emit('requeued', id, 'try', redis.call('GET', '@RETRY@' .. id), 'worker', owner and worker_of(owner),
           'reason', 'stalled')
      tally('requeued')
    end
    -- Else still queued under its own score: a worker that keeps running jobs there holds it; leave it.
  end
  return #expired
end
""".replace("@IP@", in_progress_key_prefix)
    .replace("@JOB@", job_key_prefix)
    .replace("@RETRY@", retry_key_prefix)
    .replace("@HALF@", str(BAND // 2))
    .replace("@BAND@", str(BAND))
    .replace("@FLOOR@", str(PARKED_FLOOR))
    .replace("@PARK@", str(PARK))
)
