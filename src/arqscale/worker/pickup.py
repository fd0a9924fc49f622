"""The worker's Redis side: pickup, heartbeat and finishing jobs, each one atomic Lua script.

See docs/design.md, "Job life cycle" and "Ownership". Three scripts, so a busy worker makes at most
one round trip per loop tick for everything it has to tell Redis:

- ``PICKUP_LUA`` takes up to N ready jobs out of the queue (paused flag, sliding rate window, bands
  most urgent first), leases them to one pickup *token*, and returns their payloads.
- ``FINISH_LUA`` records a batch of outcomes (success, retry, dead, put back) in one call.
- ``HEARTBEAT_LUA`` renews the leases of the running jobs and the worker's own heartbeat.

A running job stays in its queue's sorted set, where arq's ``Job.result()`` and ``Job.status()`` look
for it, but parked above every band (``scores.PARK``), so no pickup walks past running jobs.

Ownership: every pickup call carries a token, unique to the worker and the call, stored with each
job it takes (``arq:in-progress:<id>`` = ``"<queue score> <try> <token>"``). A finish record or a heartbeat
counts only while the job's in-progress value still names its token, so a worker that stalled past
its lease (its job was swept back and taken by another) writes nothing, and a resent batch (a lost
reply) finds its jobs already settled and writes nothing twice. A resent pickup (same token) returns
what the first one took, without counting a try or charging the rate limit again.

Every "now" is Redis' ``TIME``, never a worker's clock: pods disagree by seconds.

Per-job keys are built inside the scripts from arq's prefixes (not declared in KEYS), as arq does:
each script touches one queue's keys and its jobs' keys on one Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

from arqscale.core import scores
from arqscale.core.cancellation import ABORT_MAX_AGE_MS
from arqscale.core.events import ERROR_EVENT_CHARS, EVENTS_PER_ENTRY, MESSAGE_EVENT_CHARS, pack_jobs
from arqscale.core.keys import QueueKeys
from arqscale.core.lua import (
    LEASE_LUA,
    NOW_LUA,
    RETRY_TTL_MS,
    LibraryUse,
    LuaLibrary,
    LuaTemplate,
    exchange,
    fcall,
    missing_function,
    not_loaded,
    pack,
)
from arqscale.core.spec import QueueSpec

logger = logging.getLogger("arqscale.worker")

# The in-progress key (the ownership record) is deleted by the outcome or the sweep that ends the lease, and has no
# TTL: a TTL would make it a candidate for eviction under Redis' volatile-* maxmemory policies (a job's ownership
# gone while it runs: run twice), and it cost 3 % of a no-op job's Redis work (bench/redis_cost.py). Kept as an
# argument for the scripts' positions; unused.
IN_PROGRESS_TTL_MS = RETRY_TTL_MS
# Caps that keep every script call short, whatever the backlog: Redis runs one script at a time.
MAX_PICKUP = 1000  # jobs taken by one call
SWEEP_MAX = 100  # expired leases returned to the queue by one call
SKIP_MAX = 1000  # queue entries held by an arq-style worker (in-progress key, still queued) stepped over
MAX_RECORDS = 500  # outcomes written by one finish call
MAX_HEARTBEAT = 2000  # leases renewed by one heartbeat call
HOLD_MAX = 1000  # jobs of keys at their limit moved to their key's waiting set by one call
TIMERS_MAX = 100  # keys whose held jobs one call looks at again
BANDS_ARG = 17  # ARGV index of PICKUP_LUA's first band low
# Round trips a worker keeps in flight at once, each with its own pick record: while one lane's reply is on its
# way, another carries the outcomes of jobs that ended meanwhile and takes more (bench/run.py: no-op, I/O). Three,
# with pickups of up to twice the slots (``Worker._pick_cap``): no-op jobs at concurrency 50 ran 33,000-35,000
# jobs/s against 23,000-25,000 with two lanes of at most the slots; four lanes ran 31,600-32,500 (session 9).
LANES = 3


def _worker_text(source: str) -> str:
    """The worker scripts' constants in place; the per-job key tokens stay (they depend on the key layout)."""
    source = source.replace("@HALF@", str(scores.BAND // 2)).replace("@BAND@", str(scores.BAND))
    source = source.replace("@BANDS@", str(BANDS_ARG)).replace("@TIMERS_MAX@", str(TIMERS_MAX))
    return source.replace("@PARK@", str(scores.PARK)).replace("@ABORT_AGE@", str(ABORT_MAX_AGE_MS))


# The bodies of the scripts a worker calls per job or per tick, for its Redis Functions library (WORKER_LIBRARY).
_LIBRARY_BODIES: dict[str, str] = {}


def _lua(source: str, function: str = "") -> LuaTemplate:
    """A worker script; ``function``: its key in the worker's library too (called by ``FCALL`` where it can be)."""
    if function:
        _LIBRARY_BODIES[function] = _worker_text(source)
    return LuaTemplate(_worker_text(NOW_LUA + LEASE_LUA + source))


# KEYS: queue, active, paused, starts (rate window), pick (this worker's last pickup), group prefix,
#       events stream, totals hash, marker (added again when ready jobs may remain: the next idle worker wakes)
# ARGV: wanted, token, lease ms, rate max (0 = none), rate interval ms, retry ttl ms (unused now that a pickup
#       writes no try counter; kept so the positions stay), in-progress ttl ms (unused: the record has no TTL),
#       sweep max, skip max, per-key concurrency (0 = none), per-key rate max (0 = none), per-key rate
#       interval ms, key kwarg ('' = none), hold max, events max len (0 = none), may be a resend (1: this token
#       may have been sent before; 0: fresh), band lows... (from ARGV[BANDS_ARG])
# Events: `active` per job taken (after `waiting` for a job no event announced: a plain arq producer's).
# Returns {status, wait_ms, swept, then per job: id, payload|nil, score}, or for a job that is not a first try or has
#   flags: {id, {payload|nil, try, last error|nil, flags}, score} (the usual job costs three fields, not six)
#   flags: 1 aborted: a cancel request (arq's abort set) names the job: the worker ends it cancelled, unrun;
#          2 counted: the job has a try counter (its success deletes it; a first try of ours has none).
#   status 0 = ran, 1 = paused, 2 = rate window used up (jobs may still have been taken up to the limit),
#   3 = a resend: the jobs the first call with this token took (and still holds).
#   wait_ms: -1, or ms until more may be taken (status 2: until the oldest start leaves the rate window;
#   else the next deferred job's ready time); 0 when the call stopped at its hold budget (`hold max` jobs of
#   keys at their limit moved aside) with slots still free: the worker calls again at once.
PICKUP_LUA = _lua(
    """
local want = tonumber(ARGV[1])
local asked = want  -- want may shrink to what the rate window allows
local token = ARGV[2]
local worker = worker_of(token)
events_to(KEYS[7], KEYS[8], ARGV[15])
-- The enqueue time in a plain arq payload (ms), for its `waiting` event: arq writes `et` last, so it is read
-- from the payload's tail: JSON `"et": <ms>}`, or a pickle's `et` followed by its 6-byte integer.
local function enqueued_of(p)
  if not p then return nil end
  local tail = string.sub(p, -48)
  local ms = string.match(tail, '"et":%s*(%d+)%s*}%s*$')
  if ms then return ms end
  local b = string.match(tail, "\\140\\002et\\148\\138\\006(......)u%.$")
  if not b then return nil end
  local v = 0
  for i = 6, 1, -1 do v = v * 256 + string.byte(b, i) end
  return string.format('%d', v)
end
local out = {0, -1, 0}
-- Lengths kept in counters rather than read with `#` on every append (a search each time: bench/redis_cost.py).
local n_out = 3
-- Whether arq's abort set exists, read on the first job handed out (an empty pickup does not read it).
local aborting = nil
gbase = KEYS[6] or ''
-- Read only for a queue with groups: each tonumber is a strtod.
local gconc, grate, gwin, gkw = 0, 0, 0, ARGV[13]
if gbase ~= '' then gconc, grate, gwin = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]) end
local limited = gbase ~= '' and (gconc > 0 or grate > 0)
-- Whether a payload is our producer's (producer.job_payload: its try field is 0 where arq's enqueue_job writes None),
-- which an event announced at enqueue: JSON `{"t":0,`, or a pickle whose dict opens with 't': 0 (protocol 4 or 5).
-- Compared byte by byte: string.sub would make (and hash) a new string per job.
local byte = string.byte
local function ours(p)
  if not p then return false end
  local a, b, c, d, e, f, g = byte(p, 1, 7)
  if a == 123 and b == 34 and c == 116 and d == 34 and e == 58 and f == 48 and g == 44 then return true end
  return string.sub(p, 12, 20) == '}\\148(\\140\\001t\\148K\\000'
end
-- payload: nil = not read yet (false: read, missing).
local function hand_out(id, try, score, payload)
  local err = false
  if try > 1 then err = redis.call('GET', '@ERR@' .. id) end
  local n = n_out
  if payload == nil then payload = redis.call('GET', '@JOB@' .. id) end
  -- Score 1 is arq's own abort mark: Job.abort() of a deferred job moves it to score 1 and writes the abort set
  -- in its next round trip; a pickup in between (a worker woken by the queue key's invalidation) must not run
  -- the job it is cancelling. No producer writes a ready time of 1 ms after 1970.
  if score ~= '1' and aborting == nil then aborting = redis.call('EXISTS', '@ABORT@') == 1 end
  -- Flags: 1 aborted; 2 the job may have a try counter (not read here: assume so).
  local flags = ((score == '1' or (aborting and redis.call('ZSCORE', '@ABORT@', id))) and 1 or 0) + 2
  out[n+1], out[n+2], out[n+3] = id, {payload or false, try, err, flags}, score
  n_out = n + 3
end
-- A resend of a pickup whose reply was lost: hand back what it took, charge nothing again. Looked for only when
-- the caller may have sent this token before (ARGV[16] = 1): a fresh token cannot be a resend.
if ARGV[16] == '1' and redis.call('LINDEX', KEYS[5], 0) == token then
  out[1] = 3
  for _, id in ipairs(redis.call('LRANGE', KEYS[5], 1, -1)) do
    local score, owner, try = lease_of(id)
    if owner == token then hand_out(id, try or tonumber(redis.call('GET', '@RETRY@' .. id) or '1'), score) end
  end
  return out
end
out[3] = sweep(KEYS[1], KEYS[2], tonumber(ARGV[8]), false)
if redis.call('EXISTS', KEYS[3]) == 1 then out[1] = 1; return out end
-- A job's key: the one given at enqueue, else (JSON queues) the named keyword argument in its payload.
-- Numbers become their integer text ("42", as a producer would write the id); other values give no key.
local function key_of(id)
  local k = redis.call('GET', '@GROUP@' .. id)
  if k then return k, false end
  if gkw == '' then return nil, false end
  local payload = redis.call('GET', '@JOB@' .. id)
  if not payload then return nil, false end
  local ok, d = pcall(cjson.decode, payload)
  if not ok or type(d) ~= 'table' or type(d.k) ~= 'table' then return nil, payload end
  local v = d.k[gkw]
  if type(v) == 'string' then return v, payload end
  if type(v) == 'number' then
    if v == math.floor(v) and math.abs(v) < 2^53 then return string.format('%d', v), payload end
    return tostring(v), payload
  end
  return nil, payload
end
if limited then
  -- Only on queues with `group:`, so other queues' pickups run no extra command (tests/worker/test_ownership.py).
  -- Keys whose timer is due: a rate window freed a start, or a held key's safety check came round.
  local due = redis.call('ZRANGEBYSCORE', gbase .. 'timers', '-inf', now, 'LIMIT', 0, @TIMERS_MAX@)
  for _, k in ipairs(due) do
    redis.call('ZREM', gbase .. 'timers', k)
    local free = 1000
    if gconc > 0 then free = gconc - tonumber(redis.call('HGET', gbase .. 'running', k) or '0') end
    if grate > 0 then
      local sk = gbase .. 'starts:' .. k
      redis.call('ZREMRANGEBYSCORE', sk, '-inf', now - gwin)
      free = math.min(free, grate - redis.call('ZCARD', sk))
    end
    if free > 0 then group_back(KEYS[1], k, math.min(free, 1000)) end
    if redis.call('EXISTS', gbase .. 'wait:' .. k) == 1 then
      -- Some stay held: look again when the key can next start one, so no held job is ever stranded.
      local again = group_full(k, gconc, grate, gwin, tonumber(ARGV[3])) or (now + tonumber(ARGV[3]))
      redis.call('ZADD', gbase .. 'timers', again, k)
    end
    group_tidy(k)
  end
end
local rate_max = ARGV[4] == '0' and 0 or tonumber(ARGV[4])
local window = rate_max > 0 and tonumber(ARGV[5]) or 0
if rate_max > 0 then
  -- A sliding window: at most rate_max starts in any `window` ms, across every worker of the queue.
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
  local used = redis.call('ZCARD', KEYS[4])
  if used >= rate_max then
    local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    out[1] = 2
    out[2] = math.max(tonumber(first[2]) + window - now, 1)
    return out
  end
  if rate_max - used < want then want = rate_max - used end
end
-- Every job taken is parked under its lease (scores.LEASED): one score for the whole call, formatted once.
local lease_s = leased_s(now + tonumber(ARGV[3]))
local hold_max = tonumber(ARGV[14])
local taken, skip_left, hold_left = {}, tonumber(ARGV[9]), hold_max
local nt = 0  -- #taken
-- Per job taken: its queue score and the try it is taken for (as text); its payload when the per-key check already
-- read it; whether it had no try counter (a first try: our producer's job, or a plain arq producer's).
local taken_score, taken_try_s, taken_payload, counted_at = {}, {}, {}, {}
-- Read once per call, not per job: nothing in the loop below adds to `pend` (a queue without `group:`, or whose
-- keyed jobs were all picked, then runs no HGET per job).
local pend_live = gbase ~= '' and redis.call('EXISTS', gbase .. 'pend') == 1
for b = @BANDS@, #ARGV do
  if nt >= want or hold_left <= 0 then break end
  local low = tonumber(ARGV[b])
  local lo_s, hi_s = string.format('%d', low - @HALF@), string.format('%d', low + now)
  local skipped = 0
  while nt < want do
    -- Once jobs are being held, read ahead: held jobs leave the queue without counting towards `want`.
    local page = want - nt + (hold_left < hold_max and 100 or 0)
    local ids = redis.call('ZRANGEBYSCORE', KEYS[1], lo_s, hi_s, 'WITHSCORES', 'LIMIT', num_s(skipped), num_s(page))
    if #ids == 0 then break end
    -- The page's try counters and in-progress keys, one MGET: the try a job is taken for goes into its ownership
    -- record, and a job whose in-progress key exists is held by an arq-style worker.
    local rks, half = {}, #ids / 2
    for i = 1, #ids, 2 do
      local id = ids[i]
      rks[(i + 1) / 2] = '@RETRY@' .. id
      rks[half + (i + 1) / 2] = '@IP@' .. id
    end
    local befores = redis.call('MGET', unpack(rks))
    -- The jobs taken from this page, parked above every band by one ZADD and claimed (their ownership records) by
    -- one MSET once the page is walked, before the next page is read: parked, they leave the range the next
    -- ZRANGEBYSCORE reads from `skipped` on. One command each for the page, not one claim per job: a command
    -- called from Lua costs about as much as the rest of a job's pickup (bench/redis_instructions.py).
    local park, np, claims = {}, 0, {}
    for i = 1, #ids, 2 do
      if nt >= want then break end
      local id, score = ids[i], ids[i+1]
      local k, payload, due = nil, nil, nil
      local before = befores[(i + 1) / 2]
      -- Held by a worker that keeps running jobs in the queue (arq's own, or ours before this protocol).
      local arq_held = befores[half + (i + 1) / 2] ~= false
      if pend_live and not arq_held then group_unpend(id) end
      if limited and not arq_held then
        k, payload = key_of(id)
        if k then due = group_full(k, gconc, grate, gwin, tonumber(ARGV[3])) end
      end
      if arq_held then
        -- Held by a worker that keeps running jobs in the queue (arq's own, or ours before this protocol).
        skipped = skipped + 1
        skip_left = skip_left - 1
      elseif due then
        -- Its key is at its limit: out of the queue into the key's waiting set, so it holds up no other key.
        redis.call('ZREM', KEYS[1], id)
        group_hold(id, score, k, due)
        hold_left = hold_left - 1
        if hold_left <= 0 then break end
      else
        if k then
          redis.call('HINCRBY', gbase .. 'running', k, 1)
          redis.call('HSET', gbase .. 'run', id, k)
          grun_live = true
          redis.call('ZADD', gbase .. 'index', 0, k)
          if grate > 0 then
            local sk = gbase .. 'starts:' .. k
            redis.call('ZADD', sk, now, token .. '#' .. id)
            redis.call('PEXPIRE', sk, gwin)
          end
        end
        local try_s = '1'  -- a first try (a counter of 0, or none: a plain arq producer's job) needs no arithmetic
        if before and before ~= '0' then try_s = num_s((tonumber(before) or 0) + 1) end
        park[np+1] = lease_s
        park[np+2] = id
        claims[np+1] = rks[half + (i + 1) / 2]
        claims[np+2] = score .. ' ' .. try_s .. ' ' .. token
        np = np + 2
        nt = nt + 1
        taken[nt] = id
        taken_score[nt] = score
        taken_try_s[nt] = try_s
        if payload then taken_payload[nt] = payload end
        if before then counted_at[nt] = true end  -- sparse: most jobs have no counter
      end
    end
    if np > 0 then
      redis.call('ZADD', KEYS[1], unpack(park))
      redis.call('MSET', unpack(claims))
    end
    if skip_left <= 0 or hold_left <= 0 then break end
    -- A short page was the band's last: nothing in this loop adds a ready job (a trickle's pickup reads each band
    -- once, not twice).
    if #ids < 2 * page then break end
  end
end
if #taken > 0 then
  -- The payloads, one command for the whole call. The try counter is not written: the try taken is in the
  -- ownership record (see lua.LEASE_LUA); the lease is the parked score.
  -- Numeric loops, not ipairs: ipairs calls its iterator once per job.
  local jks = {}
  for i = 1, nt do jks[i] = '@JOB@' .. taken[i] end
  local payloads = redis.call('MGET', unpack(jks))
  local announced_here = 0
  -- Read once for the call (see hand_out: the abort set, and score 1).
  aborting = redis.call('EXISTS', '@ABORT@') == 1
  local n = n_out
  for i = 1, nt do
    local id = taken[i]
    local payload = taken_payload[i] or payloads[i]
    -- A job with no try counter whose payload is not our producer's is a plain arq producer's, which no event
    -- announced: it gets its `waiting` event here, before `active` (a counter, even at 0, means one did).
    local counted = counted_at[i]
    if not counted and not ours(payload) then
      emit('waiting', id, 'enqueued', enqueued_of(payload))
      announced_here = announced_here + 1
    end
    -- As hand_out, inline: a function call per job costs about what the rest of this does.
    local try_s, score = taken_try_s[i], taken_score[i]
    -- Flags: 1 aborted (a cancel request names it, or arq's abort mark); 2 it has a try counter, which its success
    -- must delete (a first try of ours has none: one DEL fewer).
    local aborted = score == '1' or (aborting and redis.call('ZSCORE', '@ABORT@', id))
    local flags = (aborted and 1 or 0) + (counted and 2 or 0)
    if try_s == '1' and flags == 0 then
      -- The usual job: three fields (each field of the reply costs Redis about 600 instructions to convert).
      out[n+1], out[n+2], out[n+3] = id, payload, score
    else
      local err = false
      if try_s ~= '1' then err = redis.call('GET', '@ERR@' .. id) end
      out[n+1], out[n+2], out[n+3] = id, {payload or false, try_s, err, flags}, score
    end
    n = n + 3
  end
  n_out = n
  -- After every `waiting` above: a job's `waiting` comes before its `active`.
  emit_jobs('active', worker, taken, taken_try_s)
  -- Counted once per call, not per job.
  tally('started', #taken)
  if announced_here > 0 then tally('enqueued', announced_here) end
  -- A list, not one string of length-prefixed ids: table.concat costs more per id than RPUSH does (measured).
  redis.call('DEL', KEYS[5])
  redis.call('RPUSH', KEYS[5], token, unpack(taken))
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
  if rate_max > 0 then
    local starts = {}
    for i = 1, #taken do starts[2*i-1] = now; starts[2*i] = token .. '#' .. i end
    redis.call('ZADD', KEYS[4], unpack(starts))
    redis.call('PEXPIRE', KEYS[4], window)
  end
end
if #taken < asked then
  if rate_max > 0 and #taken == want then
    -- Stopped by the rate window, not by the queue running dry.
    local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    out[1] = 2
    out[2] = math.max(tonumber(first[2]) + window - now, 1)
  else
    -- Nothing more is ready: when is the next deferred job due, or the next held key looked at again?
    if limited then
      local t = redis.call('ZRANGE', gbase .. 'timers', 0, 0, 'WITHSCORES')
      if #t > 0 then out[2] = math.max(tonumber(t[2]) - now, 1) end
    end
    for b = @BANDS@, #ARGV do
      local low = tonumber(ARGV[b])
      local nxt = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', low + now),
                             '(' .. string.format('%d', low + @HALF@), 'WITHSCORES', 'LIMIT', '0', '1')
      if #nxt > 0 then
        local wait = tonumber(nxt[2]) - low - now
        if out[2] < 0 or wait < out[2] then out[2] = wait end
      end
    end
    -- Stopped at the hold budget: ready jobs of other keys may be right behind the ones held. Say "now".
    if hold_left <= 0 then out[2] = 0 end
  end
end
-- Jobs taken or held leave nothing new to run: their invalidation of the queue key need wake no idle worker.
if #taken > 0 or hold_left < hold_max then own_change(KEYS[1]) end
-- Ready jobs may remain (it took all it asked for, or swept leases back): the marker wakes the next idle worker.
if KEYS[9] and ((want > 0 and #taken >= want) or out[3] > 0) then redis.call('ZADD', KEYS[9], '0', '0') end
return out
""",
    "pickup",
)

# KEYS: queue, active, completed, dlq, dlq_index, group prefix, events stream, totals hash
# ARGV: completed ttl ms, completed max, failed ttl ms, failed max, error and try counter ttl ms, events max len,
#       keyed ('1': the queue has per-key limits, so a job may have a stored key to delete; '0': none can),
#       worker id (its events'), then records of nine: kind, id, held, a, b, ago, try, ran ms, note, then the
#       successes' `completed` events ready-made (``events.pack_jobs``: the `jobs` field of each run of up to 20
#       successive ok records, only when there are two or more), then how many such fields there are
#   held:  the ownership record the job was taken under (``Picked.record``), or the pickup token alone
#   try, ran: the try number and how long it ran (ms; -1 = it never ran); note: the error (retry, dead) or the
#          reason (cancel) its event carries
# Events per kind: ok `completed`; retry `failed` + `retrying`; dead `failed` + `dead` (`failed` only when a try
# ran); cancel `cancelled`; back `requeued` (reason drain). The totals count each.
#   ago:   ms since the try ended: each job's own time in `completed` and the dead-letter index (Redis' clock
#          less how long the record waited in the worker), not the batch's
#   ok:    a = serialized result ('' = keep none), b = '1' when the job may have stored progress or log lines
#          (this try wrote some, or an earlier one may have), which then get the result's TTL, or a try counter
#          (``Picked.counted``), which is then deleted; '' = none
#   retry: a = delay ms (from now, in the job's own band), b = error JSON
#   dead:  a = DeadJob JSON, b = arq's failed result ('' = keep none)
#   back:  a = try counter to restore (the cut-short try does not count); the job keeps its queue score; note =
#          the reason its `requeued` event gives (drain: a stopping worker's; unstarted: a reserve given back)
#   cancel: a = arq's result of a cancelled job ('' = keep none); never retried, no dead-letter entry
# An outcome that ends the job also clears its cancel request (arq's abort set); a retry or a put-back leaves
# it, so the next pickup takes the job only to cancel it.
# A record whose ownership record no longer holds the job is dropped: its id is returned among the stale ones.
# A dead-letter entry and a failed result go together: a success under the same id (a new job under an id
# whose entry was kept) removes the entry, and trimming an entry deletes its result, so a requeue or purge
# may delete the result key of any id in the store.
FINISH_LUA = _lua(
    """
local n_ok, n_dead = 0, 0
local stale = {}
local keyed = ARGV[7] == '1'
local w = ARGV[8]  -- the worker id, for the events: every record of a call is one worker's
-- Read once per call rather than one command per job: most calls find no cancel request (arq's abort set) and
-- no dead letter; nothing below adds to either, except a `dead` record (dlq_live set there).
local aborting, dlq_live = false, false
if redis.call('EXISTS', '@ABORT@', KEYS[4]) > 0 then  -- one command for both when neither exists (the usual case)
  aborting = redis.call('EXISTS', '@ABORT@') == 1
  dlq_live = redis.call('EXISTS', KEYS[4]) == 1
end
gbase = KEYS[6] or ''
events_to(KEYS[7], KEYS[8], ARGV[6])
-- The totals are added once per call (one HINCRBY per field), not per record.
local counted = {}
local function count(field, n)
  if n ~= 0 then counted[field] = (counted[field] or 0) + (n or 1) end
end
-- The ownership records of the whole batch, one MGET. A record ends its job's lease; a later record of the same id
-- in this call then finds it ended (stale), as it would have read it after the first one's writes.
local n_pre = tonumber(ARGV[#ARGV]) or 0
local last = #ARGV - 1 - n_pre  -- the records' end
local ipks = {}
for i = 9, last, 9 do ipks[(i - 9) / 9 + 1] = '@IP@' .. ARGV[i+1] end
local owners = #ipks > 0 and redis.call('MGET', unpack(ipks)) or {}
local ended = {}
-- The successes' writes that take many keys or members, one command each for the batch after the loop: their
-- keys to delete, their ids (queue), their `completed` entries and events, their progress and log keys.
local ok_del, ok_ids, ok_done, ok_extra = {}, {}, {}, {}
local ok_stale = false  -- an ok record was dropped: the ready-made events name it, so they are built here instead
local n_del = 0  -- #ok_del (n_ok counts the others)
local run_ok = 0  -- the successes' run ms, added to the totals once
-- Each record's finish time as a score, formatted once per distinct `ago` (a batch's records mostly share it).
local at_of = {}
for i = 9, last, 9 do
  local kind, id, held = ARGV[i], ARGV[i+1], ARGV[i+2]
  local r = (i - 9) / 9 + 1  -- the record's place in the batch
  local rec = owners[r]
  -- The record names the ownership record it was taken under: equal, the job is still this pickup's. A record
  -- from before the try moved into it ("<score> <token>") holds the job when its token is the one named.
  local owned = rec == held and not ended[id]
  if not owned and rec and not ended[id] then
    local _, owner = split_lease(rec)
    local _, mine = split_lease(held)
    -- `held` is a record, or a bare token, which may itself hold a space (a worker id's): compare it whole too.
    owned = owner ~= nil and (owner == held or owner == mine)
  end
  if not owned then
    stale[#stale+1] = id
    if kind == 'ok' then ok_stale = true end
  else
    ended[id] = i  -- which record ended it
    -- Every outcome ends the lease: the job's key gets its slot back (once: the ownership check drops a resend).
    if gbase ~= '' then group_release(KEYS[1], id) end
  end
  if not owned then
    -- Written by another owner now, or settled already (a resend): nothing to do.
  elseif kind == 'ok' then
    local a, try, ran = ARGV[i+3], ARGV[i+6], ARGV[i+7]
    -- GET: the reply is the old value (none, almost always), not a status Lua would make a table of.
    if a ~= '' then redis.call('SET', '@RESULT@' .. id, a, 'PX', ARGV[1], 'GET') end
    local n = n_del
    ok_del[n+1], ok_del[n+2] = '@JOB@' .. id, ipks[r]
    n = n + 2
    -- A first try has a try counter only when the record says the job may have one (b: put back, requeued).
    if try ~= '1' or ARGV[i+4] ~= '' then n = n + 1; ok_del[n] = '@RETRY@' .. id end
    -- A stored key exists only on a queue with per-key limits (the producer refuses one elsewhere; a key stored
    -- before the limits were removed keeps its own TTL). The last error is written by a retry only, so a first
    -- try's success has none to delete.
    if keyed then n = n + 1; ok_del[n] = '@GROUP@' .. id end
    if try ~= '1' then n = n + 1; ok_del[n] = '@ERR@' .. id end
    n_del = n
    n_ok = n_ok + 1
    ok_ids[n_ok] = id
    local ago = ARGV[i+5]
    local at_s = at_of[ago]
    if not at_s then at_s = string.format('%d', now - math.max(tonumber(ago) or 0, 0)); at_of[ago] = at_s end
    ok_done[2*n_ok-1] = at_s
    ok_done[2*n_ok] = id
    if ran ~= '-1' and ran ~= '0' then run_ok = run_ok + ran end  -- -1: the task never ran
    if ARGV[i+4] ~= '' then  -- the job may have progress or log lines stored: they get the result's TTL below
      ok_extra[#ok_extra+1] = '@PROG@' .. id
      ok_extra[#ok_extra+1] = '@LOGS@' .. id
    end
    if aborting then redis.call('ZREM', '@ABORT@', id) end
    -- The dead-letter hash and its index go together (dead_letters.py): the index only when the hash had it.
    if dlq_live and redis.call('HDEL', KEYS[4], id) == 1 then redis.call('ZREM', KEYS[5], id) end
  else
    local a, b = ARGV[i+3], ARGV[i+4]
    local at = now - math.max(tonumber(ARGV[i+5]) or 0, 0)
    local try, ran, note = ARGV[i+6], tonumber(ARGV[i+7]) or -1, ARGV[i+8]
    local dur = ran >= 0 and ran or nil  -- nil: the task never ran (unknown function, undecodable payload, ...)
    local score, _, taken_try = split_lease(rec)
    if kind == 'retry' then
      queue_added = true  -- a job to run again: the invalidation wakes the idle workers (they learn when)
      redis.call('ZADD', KEYS[1], string.format('%d', band_of(tonumber(score)) + now + tonumber(a)), id)
      redis.call('DEL', '@IP@' .. id)
      -- The try that failed counts: from its ownership record to the counter the next pickup reads.
      redis.call('SET', '@RETRY@' .. id, taken_try or try, 'PX', ARGV[5])
      redis.call('SET', '@ERR@' .. id, b, 'PX', ARGV[5])
      emit('failed', id, 'try', try, 'worker', w, 'error', note, 'duration_ms', dur)
      emit('retrying', id, 'try', try, 'delay_ms', a)
      count('failed')
      count('retried')
      if ran > 0 then count('run_ms', ran) end
    elseif kind == 'dead' then
      redis.call('HSET', KEYS[4], id, a)
      dlq_live = true
      redis.call('ZADD', KEYS[5], at, id)
      -- The id's result key is the failed result now: a later trim of `completed` must not delete it.
      redis.call('ZREM', KEYS[3], id)
      if b ~= '' then redis.call('SET', '@RESULT@' .. id, b, 'PX', ARGV[3]) end
      redis.call('DEL', '@JOB@' .. id, '@IP@' .. id, '@RETRY@' .. id, '@ERR@' .. id)
      redis.call('ZREM', KEYS[1], id)
      redis.call('PEXPIRE', '@PROG@' .. id, ARGV[3])
      redis.call('PEXPIRE', '@LOGS@' .. id, ARGV[3])
      if aborting then redis.call('ZREM', '@ABORT@', id) end
      n_dead = n_dead + 1
      if dur then
        emit('failed', id, 'try', try, 'worker', w, 'error', note, 'duration_ms', dur)
        count('failed')
        if ran > 0 then count('run_ms', ran) end
      end
      emit('dead', id, 'try', try, 'worker', w, 'error', note)
      count('dead')
    elseif kind == 'cancel' then
      if a ~= '' then redis.call('SET', '@RESULT@' .. id, a, 'PX', ARGV[3]) end
      redis.call('DEL', '@JOB@' .. id, '@IP@' .. id, '@RETRY@' .. id, '@ERR@' .. id, '@GROUP@' .. id)
      redis.call('ZREM', KEYS[1], id)
      if aborting then redis.call('ZREM', '@ABORT@', id) end
      redis.call('PEXPIRE', '@PROG@' .. id, ARGV[3])
      redis.call('PEXPIRE', '@LOGS@' .. id, ARGV[3])
      emit('cancelled', id, 'try', try, 'worker', w, 'reason', note, 'duration_ms', dur)
      count('cancelled')
      if ran > 0 then count('run_ms', ran) end
    elseif kind == 'back' then
      queue_added = true  -- put back by a draining worker: another one should take it at once
      redis.call('ZADD', KEYS[1], score, id)
      redis.call('DEL', '@IP@' .. id)
      -- Kept at 0 rather than deleted: the counter also says an event announced the job (see PICKUP_LUA). With its
      -- own TTL: a plain arq producer's job had no counter until now.
      redis.call('SET', '@RETRY@' .. id, math.max(tonumber(a) or 0, 0), 'PX', ARGV[5])
      emit('requeued', id, 'try', try, 'worker', w, 'reason', note ~= '' and note or 'drain')
      count('requeued')
    end
  end
end
-- The result and log keys of trimmed ids (at most 1,000 a call), one DEL.
local function trim_keys(ids)
  local ks = {}
  for i, id in ipairs(ids) do ks[2*i-1] = '@RESULT@' .. id; ks[2*i] = '@LOGS@' .. id end
  redis.call('DEL', unpack(ks))
end
if n_ok > 0 then
  redis.call('DEL', unpack(ok_del))
  redis.call('ZREM', KEYS[1], unpack(ok_ids))
  redis.call('ZADD', KEYS[3], unpack(ok_done))
  -- Most jobs write no progress and no log (their records say so): one EXISTS for the others, not two PEXPIRE each.
  if #ok_extra > 0 and redis.call('EXISTS', unpack(ok_extra)) > 0 then
    for _, k in ipairs(ok_extra) do redis.call('PEXPIRE', k, ARGV[1]) end
  end
  -- An id trimmed from `completed` takes its result key with it, so completed_max bounds the stored results
  -- themselves, not only the index (at most 1,000 per call: each success adds one, so it keeps up).
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%d', now - tonumber(ARGV[1])),
                         'LIMIT', '0', '1000')
  local over = redis.call('ZCARD', KEYS[3]) - #old - tonumber(ARGV[2])
  if over > 0 then
    local extra = redis.call('ZRANGE', KEYS[3], #old, #old + math.min(over, 1000) - 1)
    for _, id in ipairs(extra) do old[#old+1] = id end
  end
  if #old > 0 then
    redis.call('ZREM', KEYS[3], unpack(old))
    trim_keys(old)
  end
end
if n_dead > 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. string.format('%d', now - tonumber(ARGV[3])),
                         'LIMIT', '0', '1000')
  local over = redis.call('ZCARD', KEYS[5]) - #old - tonumber(ARGV[4])
  if over > 0 then
    local extra = redis.call('ZRANGE', KEYS[5], #old, #old + math.min(over, 1000) - 1)
    for _, id in ipairs(extra) do old[#old+1] = id end
  end
  if #old > 0 then
    redis.call('HDEL', KEYS[4], unpack(old))
    redis.call('ZREM', KEYS[5], unpack(old))
    trim_keys(old)
  end
end
if n_ok > 0 then
  if n_pre > 0 and not ok_stale and n_ok > 1 and ev_on() then
    -- As sent: every ok record held its job, so the fields name exactly the jobs completed here.
    for c = 1, n_pre do
      emit_packed('completed', w, ARGV[last + c], math.min(@PER_ENTRY@, n_ok - (c - 1) * @PER_ENTRY@))
    end
  else
    -- Built here from the records that held their jobs (a record's try and duration as sent: text, not a number,
    -- which Lua would format again; no duration when the task never ran).
    local ids, tries, durs, m = {}, {}, {}, 0
    for i = 9, last, 9 do
      if ARGV[i] == 'ok' and ended[ARGV[i+1]] == i then
        m = m + 1
        ids[m], tries[m] = ARGV[i+1], ARGV[i+6]
        if ARGV[i+7] ~= '-1' then durs[m] = ARGV[i+7] end
      end
    end
    emit_jobs('completed', w, ids, tries, durs)
  end
  count('completed', n_ok)
  count('run_ms', run_ok)
end
for field, n in pairs(counted) do tally(field, n) end
-- Jobs that ended leave nothing new to run (unless a retry, a put-back or a held job let back did): no idle
-- worker need answer this call's invalidation of the queue key.
if next(ended) ~= nil then own_change(KEYS[1]) end
return stale
""".replace("@PER_ENTRY@", str(EVENTS_PER_ENTRY)),
    "finish",
)

# KEYS: active, workers, queue, wake channel, group prefix, events stream, totals hash
# ARGV: lease ms, worker id, worker heartbeat ttl ms, sweep max, events max len, then pairs: job id, token
# Returns {lost ids, swept}: lost = jobs this worker no longer owns (swept back after its lease ran out,
# and maybe taken by another worker); swept = expired leases of any worker returned to the queue.
HEARTBEAT_LUA = _lua(
    """
gbase = KEYS[5] or ''
events_to(KEYS[6], KEYS[7], ARGV[5])
local lease_s = leased_s(now + tonumber(ARGV[1]))
local lost, renew, n = {}, {}, 0
for i = 6, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i+1]
  local _, owner = lease_of(id)
  if owner == token then
    renew[n+1], renew[n+2] = lease_s, id
    n = n + 2
  else
    lost[#lost+1] = id
  end
end
-- The leases are the jobs' parked scores (scores.LEASED): one ZADD moves them all forward. XX: never adds.
if n > 0 then redis.call('ZADD', KEYS[3], 'XX', unpack(renew)) end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
-- Cancel requests nobody acted on (a plain arq abort of an id that never ran here).
redis.call('ZREMRANGEBYSCORE', '@ABORT@', '-inf', '(' .. (now - @ABORT_AGE@))
local swept = sweep(KEYS[3], KEYS[1], tonumber(ARGV[4]), true)
-- arq's Job.abort() of a running job moves it to score 1 (it takes the parked score for a ready time ahead), which
-- takes it out of the lease range: its worker renews it back (ZADD XX above) and ends it cancelled. When that
-- worker is gone (not in the workers set), the job's ownership ends here; left at score 1, the next pickup hands
-- it out to be ended cancelled, unrun.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], 1, 1, 'LIMIT', 0, 100)) do
  local _, owner, try = lease_of(id)
  if owner then
    local alive = redis.call('ZSCORE', KEYS[2], worker_of(owner))
    if not alive or tonumber(alive) < now then
      redis.call('DEL', '@IP@' .. id)
      group_release(KEYS[3], id)
      requeued_stalled(id, owner, try)
      swept = swept + 1
    end
  end
end
if swept > 0 then redis.call('PUBLISH', KEYS[4], '1') end
-- Renewed leases make nothing ready: their invalidation of the queue key need wake no idle worker.
if n > 0 then own_change(KEYS[3]) end
return {lost, swept}
""",
    "heartbeat",
)


# KEYS: the job's progress key, events stream, totals hash
# ARGV: Progress JSON, ttl ms, events max len, job id, try, worker id, percent, message
# The stored progress and its `progress` event, together.
PROGRESS_LUA = _lua(
    """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
events_to(KEYS[2], KEYS[3], ARGV[3])
emit('progress', ARGV[4], 'try', ARGV[5], 'worker', ARGV[6], 'progress', ARGV[7], 'message', ARGV[8])
""",
    "progress",
)

# The scripts above as one Redis Functions library: where Redis can (7.0 or later, not Cluster, an ACL that allows
# FUNCTION LOAD), a worker calls them by FCALL, so the prelude's helpers are made once, not per call (lua.LuaLibrary).
WORKER_LIBRARY = LuaLibrary("arqscale_worker", _worker_text(LEASE_LUA), tuple(_LIBRARY_BODIES.items()))


# The records made per job (Picked, Finish, outcomes.Decoded) and per round trip (PickupResult) are not frozen:
# a frozen dataclass's __init__ sets each field through object.__setattr__, 0.74 µs against 0.13 µs for ten
# fields, about a tenth of a no-op job's worker CPU for the four made per job. Nothing assigns to them after.
@dataclass(slots=True)
class Picked:
    """A job handed to this worker by the pickup script, held by ``token``."""

    job_id: str
    payload: bytes | None
    job_try: int
    score: int
    last_error: bytes | None
    token: str = ""
    aborted: bool = False  # a cancel request names it: end it cancelled without running it
    # Its ownership record as the pickup wrote it (``arq:in-progress:<id>``): an outcome sends it back, and the
    # finish script honours the outcome while the record is still this one (one string comparison per job).
    record: bytes = b""
    counted: bool = True  # it has a try counter (arq:retry:<id>), which its success deletes


@dataclass(slots=True)
class PickupResult:
    jobs: list[Picked]
    paused: bool = False
    rate_limited: bool = False
    wait_ms: int = -1  # -1: nothing known to become ready
    swept: int = 0  # expired leases (of any worker) this call returned to the queue
    resent: bool = False  # the reply of an earlier call with the same token, read again


FinishKind = Literal["ok", "retry", "dead", "back", "cancel"]


@dataclass(slots=True)
class Finish:
    """One outcome for ``FINISH_LUA``; see the script for what ``a`` and ``b`` mean per kind."""

    kind: FinishKind
    job_id: str
    a: bytes | str | int = ""
    b: bytes | str | int = ""
    token: str = ""  # the pickup token the job is held by (set when the record is queued for writing)
    done_at: float = 0.0  # time.monotonic() when the try ended: its place in ``completed`` or the dead letters
    job_try: int = 0  # the try number its events carry
    ran_ms: int = -1  # how long the task ran (-1: it never ran); events' duration_ms and the run_ms total
    note: str = ""  # the error (retry, dead) or reason (cancel) its event carries, capped (events.ERROR_EVENT_CHARS)
    held: bytes = b""  # the ownership record it was taken under (``Picked.record``); empty: the token alone is sent

    def queued(self, job: Picked, done_at: float) -> Finish:
        """This record, queued for writing: the pickup that holds the job (its token, ownership record and try),
        when the try ended. Built field by field: ``dataclasses.replace`` costs several times as much, once per job
        (bench/run.py's profile)."""
        return Finish(
            self.kind, self.job_id, self.a, self.b, job.token, done_at, job.job_try, self.ran_ms, self.note, job.record
        )

    def needs_check(self) -> bool:
        """Whether ``wire`` could fail: only text fields can (UTF-8 that does not encode); ids round-trip."""
        return isinstance(self.a, str) or (isinstance(self.b, str) and bool(self.b)) or bool(self.note)

    def wire(self) -> list[bytes]:
        """The record as ``FINISH_LUA`` reads it."""
        # Each job's own end time (Redis' clock minus how long the record waited here), not the batch's.
        ago = max(round((time.monotonic() - self.done_at) * 1000), 0) if self.done_at else 0
        # Ids come from Redis decoded with surrogateescape (any bytes): send back the same bytes. The data
        # fields must be valid UTF-8; the worker checks that when it builds the record (``Worker._storable``).
        note = self.note[:ERROR_EVENT_CHARS].encode("utf-8", "replace")
        return [
            _KINDS[self.kind], _raw(self.job_id), self.held or _raw(self.token), _arg(self.a), _arg(self.b),
            b"%d" % ago, b"%d" % self.job_try, b"%d" % self.ran_ms, note,
        ]  # fmt: skip

    def packed(self) -> bytes:
        """``wire`` as the nine RESP bulk strings of a command's arguments (``lua.pack`` gives the same bytes):
        one format per record instead of redis-py encoding and framing nine arguments (``QueueOps``)."""
        k, i, t, a, b, ago, j, r, n = self.wire()
        return _RECORD % (
            len(k), k, len(i), i, len(t), t, len(a), a, len(b), b, len(ago), ago, len(j), j, len(r), r, len(n), n
        )  # fmt: skip


_KINDS: dict[str, bytes] = {kind: kind.encode() for kind in ("ok", "retry", "dead", "back", "cancel")}
_RECORD = b"$%d\r\n%s\r\n" * 9


def _arg(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return b"%d" % value
    return value.encode()


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _items(args: Sequence[str | bytes | int]) -> bytes:
    """``args`` as RESP bulk strings, without the array header (``lua.pack`` of one command, header cut)."""
    return pack([args])[len(b"*%d\r\n" % len(args)) :]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    lost: list[str]
    swept: int


class QueueOps:
    """The scripts bound to one queue and one worker id."""

    def __init__(self, redis: Redis, spec: QueueSpec, worker_id: str) -> None:
        self.redis = redis
        self.spec = spec
        self.worker_id = worker_id
        self.keys = QueueKeys.of(spec, redis)
        self.lease_ms = int(spec.lease_seconds * 1000)
        self._band_lows = [band.low for band in scores.bands(spec)]
        self._pickup = redis.register_script(PICKUP_LUA.for_keys(self.keys).source)
        self._finish = redis.register_script(FINISH_LUA.for_keys(self.keys).source)
        self._heartbeat = redis.register_script(HEARTBEAT_LUA.for_keys(self.keys).source)
        self._progress = redis.register_script(PROGRESS_LUA.for_keys(self.keys).source)
        # One pick record per lane: each lane's last pickup may be resent (a lost reply) while the other's is out.
        self._pick_keys = [self.keys.pick(worker_id, lane) for lane in range(LANES)]
        # The round trip framed here rather than by redis-py (``finish_and_pickup``): what never changes is packed
        # once. A cluster client routes each command itself, so it keeps redis-py's pipeline.
        self._framed = isinstance(redis, Redis)
        # The scripts go by FCALL once WORKER_LIBRARY is loaded; a cluster client keeps EVALSHA. `_by_fcall`: how
        # the framed round trip's heads are built now.
        self._library = LibraryUse(WORKER_LIBRARY, redis, possible=self._framed)
        self._by_fcall = False
        finish_keys = self._finish_keys()
        fixed_args = self._finish_fixed_args()
        self._finish_fixed = 3 + len(finish_keys) + len(fixed_args) + 1  # + the count of ready-made events
        fixed = self._pickup_args(0, "")
        self._pickup_middle, self._pickup_tail = _items(fixed[2:15]), _items(fixed[16:])
        self._pickup_count = 3 + len(self._pickup_keys(0)) + len(fixed)
        self._frame_heads()

    def _frame_heads(self) -> None:
        """The fixed start of the framed finish and pickup commands: ``EVALSHA <sha>`` or ``FCALL <function>``."""
        finish, pickup = (
            (["FCALL", WORKER_LIBRARY.function("finish")], ["FCALL", WORKER_LIBRARY.function("pickup")])
            if self._by_fcall
            else (["EVALSHA", self._finish.sha], ["EVALSHA", self._pickup.sha])
        )
        finish_keys = self._finish_keys()
        self._finish_head = _items([*finish, len(finish_keys), *finish_keys, *self._finish_fixed_args()])
        self._pickup_heads = [
            _items([*pickup, len(self._pickup_keys(lane)), *self._pickup_keys(lane)]) for lane in range(LANES)
        ]

    async def _ready(self) -> bool:
        """Whether this call goes by FCALL (the first call loads the library), the framed heads built to match."""
        by_fcall = await self._library.ready()
        if by_fcall != self._by_fcall:
            self._by_fcall = by_fcall
            self._frame_heads()
        return by_fcall

    async def _call(self, script: AsyncScript, function: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One script call on its own: ``FCALL`` when the library is loaded (again, once, if Redis lost it),
        else ``EVALSHA`` (redis-py's script object loads the script on ``NOSCRIPT``)."""
        for _ in range(2):
            if not await self._ready():
                break
            try:
                return await fcall(self.redis, WORKER_LIBRARY.function(function), keys, args)
            except ResponseError as exc:
                if not missing_function(exc):
                    raise
            self._library.lost()
        return await script(keys=keys, args=args)

    def _pickup_args(self, wanted: int, token: str, fresh: bool = False) -> list[int | str]:
        rate = self.spec.rate_limit
        group = self.spec.group
        return [
            min(wanted, MAX_PICKUP),
            token,
            self.lease_ms,
            rate.max_jobs if rate else 0,
            rate.interval_ms if rate else 0,
            RETRY_TTL_MS,
            IN_PROGRESS_TTL_MS,
            SWEEP_MAX,
            SKIP_MAX,
            group.concurrency or 0 if group else 0,
            group.rate_limit.max_jobs if group and group.rate_limit else 0,
            group.rate_limit.interval_ms if group and group.rate_limit else 0,
            group.key or "" if group else "",
            HOLD_MAX,
            self.spec.events.stream_max,
            0 if fresh else 1,
            *self._band_lows,
        ]

    def _finish_fixed_args(self) -> list[bytes | str | int]:
        ret = self.spec.retention
        return [
            # PX 0 is an error in Redis; with completed_seconds 0 no result is written (see worker).
            max(ret.completed_seconds * 1000, 1),
            ret.completed_max,
            max(ret.failed_seconds * 1000, 1),
            ret.failed_max,
            RETRY_TTL_MS,
            self.spec.events.stream_max,
            1 if self.spec.group is not None else 0,
            self.worker_id,
        ]

    def _finish_args(self, records: Sequence[Finish]) -> list[bytes | str | int]:
        args = self._finish_fixed_args()
        for r in records:
            args += r.wire()
        events = self._completed_events(records)
        return [*args, *events, len(events)]

    def _completed_events(self, records: Sequence[Finish]) -> list[bytes]:
        """The successes' ``completed`` events ready-made, the ``jobs`` field of each run of up to
        ``EVENTS_PER_ENTRY`` ok records: Lua built them at about 6 % of a no-op job's Redis work
        (bench/redis_cost.py). None for a lone success (it gets the plain one-event entry) or without events."""
        if self.spec.events.stream_max <= 0:
            return []
        oks = [(r.job_try, r.ran_ms if r.ran_ms >= 0 else None, _raw(r.job_id)) for r in records if r.kind == "ok"]
        if len(oks) < 2:
            return []
        return [pack_jobs(oks[i : i + EVENTS_PER_ENTRY]) for i in range(0, len(oks), EVENTS_PER_ENTRY)]

    async def pickup(self, wanted: int, token: str, *, fresh: bool = False, lane: int = 0) -> PickupResult:
        """Take up to ``wanted`` jobs under ``token``; ``fresh``: the token was never sent before (no resend check);
        ``lane``: which of the worker's pick records keeps the token (one per round trip in flight)."""
        raw = await self._call(self._pickup, "pickup", self._pickup_keys(lane), self._pickup_args(wanted, token, fresh))
        return parse_pickup(raw, token)

    async def finish(self, records: Sequence[Finish]) -> list[str]:
        """Write outcomes (at most ``MAX_RECORDS`` per call); returns the ids of the stale ones, dropped."""
        stale: list[str] = []
        for i in range(0, len(records), MAX_RECORDS):
            chunk = records[i : i + MAX_RECORDS]
            reply = await self._call(self._finish, "finish", self._finish_keys(), self._finish_args(chunk))
            stale += [x.decode(errors="surrogateescape") for x in reply]
        return stale

    async def finish_and_pickup(
        self, records: Sequence[Finish], wanted: int, token: str, *, fresh: bool = False, lane: int = 0
    ) -> tuple[PickupResult | None, list[str] | None]:
        """Record outcomes, then take up to ``wanted`` jobs, in one round trip.

        Returns the pickup (None when nothing was wanted or it failed) and the stale records' ids (None
        when the records were not written; the caller sends them again: every outcome is keyed by its
        token, so a resend writes nothing twice).
        """
        if len(records) > MAX_RECORDS:
            return None, await self.finish(records)  # a backlog of outcomes after an outage: write, pick next tick
        if not records:
            return (await self.pickup(wanted, token, fresh=fresh, lane=lane) if wanted > 0 else None), []
        await self._ready()
        if self._framed:
            replies = await exchange(
                self.redis, self._framed_trip(records, wanted, token, fresh, lane), 1 + (wanted > 0)
            )
        else:
            replies = await self._pipelined_trip(records, wanted, token, fresh, lane)
        errors = [r for r in replies if isinstance(r, Exception)]
        picked = replies[1] if wanted > 0 else None
        result = None if picked is None or isinstance(picked, Exception) else parse_pickup(picked, token)
        if any(isinstance(e, NoScriptError) for e in errors):
            await self._load_scripts()
        if any(missing_function(e) for e in errors):
            self._library.lost()  # Redis lost the library (FUNCTION FLUSH, a restart): the next call loads it
        others = [e for e in errors if not not_loaded(e)]
        if others and result is None and isinstance(replies[0], Exception):
            raise others[0]
        if others:  # one of the two went through: use it; the other goes again with the next tick
            logger.error("queue %s: a script failed: %s", self.spec.name, others[0])
        stale = None if isinstance(replies[0], Exception) else [x.decode(errors="surrogateescape") for x in replies[0]]
        return result, stale

    def _framed_trip(self, records: Sequence[Finish], wanted: int, token: str, fresh: bool, lane: int) -> bytes:
        """The finish call (and the pickup when ``wanted``) in RESP, as ``_pipelined_trip`` would send them: redis-py
        encoding and framing each of a record's nine arguments was a seventh of a no-op job's worker CPU."""
        events = self._completed_events(records)
        parts = [b"*%d\r\n" % (self._finish_fixed + 9 * len(records) + len(events)), self._finish_head]
        parts += [r.packed() for r in records]
        parts.append(_items([*events, len(events)]))
        if wanted > 0:
            parts += [
                b"*%d\r\n" % self._pickup_count,
                self._pickup_heads[lane],
                _items([min(wanted, MAX_PICKUP), token]),
            ]
            parts += [self._pickup_middle, b"$1\r\n0\r\n" if fresh else b"$1\r\n1\r\n", self._pickup_tail]
        return b"".join(parts)

    async def _pipelined_trip(
        self, records: Sequence[Finish], wanted: int, token: str, fresh: bool, lane: int
    ) -> list[object]:
        async with self.redis.pipeline(transaction=False) as pipe:
            # Plain EVALSHA: redis-py's pipelined Script objects add a SCRIPT EXISTS round trip to every call.
            # After a Redis restart the script cache is empty; each command then answers NOSCRIPT on its
            # own (nothing ran), and the scripts are loaded again for the next tick.
            finish_keys, pickup_keys = self._finish_keys(), self._pickup_keys(lane)
            pipe.execute_command(
                "EVALSHA", self._finish.sha, len(finish_keys), *finish_keys, *self._finish_args(records)
            )
            if wanted > 0:
                pickup_args = self._pickup_args(wanted, token, fresh)
                pipe.execute_command("EVALSHA", self._pickup.sha, len(pickup_keys), *pickup_keys, *pickup_args)
            return list(await pipe.execute(raise_on_error=False))

    async def _load_scripts(self) -> None:
        try:
            for script in (self._finish, self._pickup, self._heartbeat):
                await self.redis.script_load(script.script)
        except RedisError as exc:  # the next call answers NOSCRIPT again and comes back here
            logger.warning("queue %s: loading scripts failed: %s", self.spec.name, exc)

    async def heartbeat(self, held: Sequence[tuple[str, str]], worker_ttl_ms: int) -> Heartbeat:
        """Renew the leases of ``held`` (job id, token) pairs and this worker's heartbeat."""
        lost: list[str] = []
        swept = 0
        chunks = [held[i : i + MAX_HEARTBEAT] for i in range(0, len(held), MAX_HEARTBEAT)] or [[]]
        k = self.keys
        for chunk in chunks:
            stream_max = self.spec.events.stream_max
            args: list[str | int] = [self.lease_ms, self.worker_id, worker_ttl_ms, SWEEP_MAX, stream_max]
            for job_id, token in chunk:
                args += [job_id, token]
            keys = [k.active, k.workers, k.queue, k.wake, k.groups, k.events, k.totals]
            raw_lost, raw_swept = await self._call(self._heartbeat, "heartbeat", keys, args)
            lost += [x.decode(errors="surrogateescape") for x in raw_lost]
            swept += int(raw_swept)
        return Heartbeat(lost, swept)

    async def progress(
        self, job_id: str, job_try: int, stored: str, ttl_ms: int, percent: float, message: str | None
    ) -> None:
        """Store a running job's progress (``arqscale:progress:<id>``) and write its ``progress`` event."""
        k = self.keys
        args: list[bytes | str | int] = [
            stored,
            ttl_ms,
            self.spec.events.stream_max,
            _raw(job_id),
            job_try,
            self.worker_id,
            repr(float(percent)),
            (message or "")[:MESSAGE_EVENT_CHARS].encode("utf-8", "replace"),
        ]
        await self._call(self._progress, "progress", [k.progress(job_id), k.events, k.totals], args)

    async def leave(self) -> None:
        """Remove this worker from the ``workers`` set on a clean exit."""
        await self.redis.zrem(self.keys.workers, self.worker_id)

    def _pickup_keys(self, lane: int = 0) -> list[str]:
        k = self.keys
        return [k.queue, k.active, k.paused, k.starts, self._pick_keys[lane], k.groups, k.events, k.totals, k.marker]

    def _finish_keys(self) -> list[str]:
        k = self.keys
        return [k.queue, k.active, k.completed, k.dlq, k.dlq_index, k.groups, k.events, k.totals]


def parse_pickup(raw: Sequence[object], token: str) -> PickupResult:
    status, wait_ms, swept = int(raw[0]), int(raw[1]), int(raw[2])  # type: ignore[call-overload]
    held = _raw(token)
    jobs = []
    for i in range(3, len(raw), 3):
        job_id, detail, score = raw[i : i + 3]
        assert isinstance(job_id, bytes) and isinstance(score, bytes)
        # The usual job (a first try, no flags) comes as its payload alone; any other with its try, last error, flags.
        payload, job_try, err, flags = detail if isinstance(detail, list) else (detail, 1, None, 0)
        assert isinstance(flags, int)
        n = int(job_try)
        jobs.append(
            Picked(
                job_id=job_id.decode(errors="surrogateescape"),
                payload=payload if isinstance(payload, bytes) else None,
                job_try=n,
                score=int(float(score)),
                last_error=err if isinstance(err, bytes) else None,
                token=token,
                aborted=bool(flags & 1),
                # As the script wrote it: the score as Redis formatted it, the try, the token.
                record=b"%s %d %s" % (score, n, held),
                counted=bool(flags & 2),
            )
        )
    return PickupResult(
        jobs=jobs, paused=status == 1, rate_limited=status == 2, wait_ms=wait_ms, swept=swept, resent=status == 3
    )
