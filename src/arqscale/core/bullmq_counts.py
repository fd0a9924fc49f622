"""Counts of BullMQ queues (``backend: bullmq``), read from BullMQ's own keys in one script.

BullMQ keeps each state of a queue ``<prefix>:<name>`` in its own key: ``wait``, ``paused`` and
``active`` are lists, ``delayed``, ``prioritized``, ``completed``, ``failed`` and ``waiting-children``
sorted sets, and ``meta`` is a hash whose ``paused`` field is set while the queue is paused. Its
``getJobCounts`` is ``LLEN`` or ``ZCARD`` per state, minus the deprecated ``0:`` marker BullMQ 4
left at the tail of ``wait``; ``raw_counts`` is exactly that, so ``tests/exporter/test_exporter_bullmq.py``
compares it with BullMQ's own answer. BullMQ's script pops the marker as it counts; ours only skips
it, because an exporter must never write to a queue it watches.

``fold`` maps those counts onto arqscale's meaning (``QueueCounts``), where ``waiting`` is every job
that could start now: BullMQ's prioritized jobs are ready too, just ordered, and must count towards
the backlog or a queue fed only with priorities would scale to its minimum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from arqscale.core.models import QueueCounts
from arqscale.core.spec import QueueSpec

# BullMQ's state names as getJobCounts reports them, in the order the script returns them.
STATES: tuple[str, ...] = (
    "waiting",
    "paused",
    "active",
    "delayed",
    "prioritized",
    "completed",
    "failed",
    "waiting-children",
)
_KEY_SUFFIXES = ("wait", "paused", "active", "delayed", "prioritized", "completed", "failed", "waiting-children")
KEYS_PER_QUEUE = len(_KEY_SUFFIXES) + 1  # + meta

# KEYS per queue: the eight state keys then meta. ARGV per queue: the queue's key base "<prefix>:<name>:".
# Returns per queue: {eight counts..., paused flag, ready time (ms) of the oldest waiting job or -1}.
# The oldest job: wait is FIFO with the next job at its tail, and the prioritized set's first member
# runs next; their hashes hold the creation "timestamp" and the "delay" a delayed job waited first.
COUNTS_LUA = """
local function is_marker(id) return id and string.sub(id, 1, 2) == '0:' end
local function ready_at(base, id)
  if not id then return -1 end
  local f = redis.call('HMGET', base .. id, 'timestamp', 'delay')
  if not f[1] then return -1 end
  return tonumber(f[1]) + (tonumber(f[2] or '0') or 0)
end
local out = {}
for q = 0, (#KEYS / 9) - 1 do
  local o = q * 9
  local base = ARGV[q + 1]
  local row = {}
  local oldest = -1
  for i = 1, 8 do
    local key = KEYS[o + i]
    if i <= 3 then
      local n = redis.call('LLEN', key)
      if i <= 2 and n > 0 then
        local tail = redis.call('LINDEX', key, -1)
        local pos = -1
        if is_marker(tail) then n = n - 1; pos = -2 end
        if n > 0 then
          local at = ready_at(base, redis.call('LINDEX', key, pos))
          if at >= 0 and (oldest < 0 or at < oldest) then oldest = at end
        end
      end
      row[i] = n
    else
      row[i] = redis.call('ZCARD', key)
      if i == 5 and row[i] > 0 then
        local at = ready_at(base, redis.call('ZRANGE', key, 0, 0)[1])
        if at >= 0 and (oldest < 0 or at < oldest) then oldest = at end
      end
    end
  end
  row[9] = redis.call('HEXISTS', KEYS[o + 9], 'paused')
  row[10] = oldest
  out[#out + 1] = row
end
return out
"""


@dataclass(frozen=True, slots=True)
class BullmqCounts:
    """One BullMQ queue as BullMQ sees it: ``states`` is what ``getJobCounts`` answers."""

    queue: str
    states: Mapping[str, int]
    is_paused: bool
    oldest_ready_ms: int  # -1 when nothing waits


def key_base(spec: QueueSpec) -> str:
    return f"{spec.prefix}:{spec.name}:"


def script_args(specs: Sequence[QueueSpec]) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of ``COUNTS_LUA`` for these BullMQ queues."""
    keys: list[str] = []
    argv: list[str] = []
    for spec in specs:
        base = key_base(spec)
        keys += [base + suffix for suffix in _KEY_SUFFIXES]
        keys.append(base + "meta")
        argv.append(base)
    return keys, argv


def raw_counts(spec: QueueSpec, raw: Sequence[int]) -> BullmqCounts:
    values = [int(x) for x in raw]
    return BullmqCounts(
        queue=spec.name,
        states=dict(zip(STATES, values[:8], strict=True)),
        is_paused=bool(values[8]),
        oldest_ready_ms=values[9],
    )


def fold(counts: BullmqCounts, now_ms: int) -> QueueCounts:
    """BullMQ's states in arqscale's terms (pure)."""
    s = counts.states
    # While paused, BullMQ renames ``wait`` to ``paused`` but leaves prioritized jobs where they are:
    # both are held by the pause, so both count as paused, exactly as an arq queue's ready jobs do.
    ready = s["waiting"] + s["paused"] + s["prioritized"]
    oldest = max(now_ms - counts.oldest_ready_ms, 0) / 1000 if counts.oldest_ready_ms >= 0 and ready else 0.0
    return QueueCounts(
        queue=counts.queue,
        waiting=0 if counts.is_paused else ready,
        paused=ready if counts.is_paused else 0,
        active=s["active"],
        delayed=s["delayed"],
        prioritized=s["prioritized"],
        completed=s["completed"],
        failed=s["failed"],
        waiting_children=s["waiting-children"],
        oldest_waiting_seconds=oldest,
        is_paused=counts.is_paused,
    )
