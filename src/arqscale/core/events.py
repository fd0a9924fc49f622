"""Job events: what happened to each job, as a capped Redis stream per queue, plus per-queue totals.

Every change of a job's state is recorded in ``arqscale:<queue>:events`` by the same Lua script that makes
the change (enqueue, pickup, finish, sweep, cancel, dead-letter requeue, schedule tick, progress), so Redis
never holds a change without its event or an event without its change (docs/events.md).

Entries are written with ``XADD ... MAXLEN ~ <max_len> *``: Redis gives each one an id
(``<ms>-<seq>``) that only grows, so a reader resumes after the last id it saw (an SSE ``Last-Event-ID``,
a consumer group's position). Fields of every event: ``event`` (one of ``EVENT_NAMES``), ``job`` (the job
id) and ``at`` (Redis' clock, ms). Optional ones (absent when they do not apply):

========== ================================================ ================================
field      meaning                                          on
========== ================================================ ================================
try        the try number (1-based)                         active, progress, retrying,
                                                            completed, failed, dead, cancelled,
                                                            requeued
worker     the worker id holding the job                    active, completed, failed, dead,
                                                            cancelled, requeued
func       the task's name                                  waiting, delayed
delay_ms   ms from ``at`` until the job is ready            delayed, retrying
enqueued   the job's enqueue time (ms), when readable       waiting written by the pickup
error      the error text (capped, ``ERROR_EVENT_CHARS``)   failed, dead
duration_ms how long the try ran                            completed, failed, cancelled
reason     why: ``stalled``, ``drain``, ``unstarted``,      requeued; cancelled; waiting
           ``dead_letter`` (requeued); the cancel's reason
           (cancelled);
           ``promoted`` (waiting: a delayed job made ready)
progress   percent (0-100)                                  progress
message    the task's progress message                      progress
========== ================================================ ================================

``failed`` means one try failed; the same script then writes ``retrying`` or ``dead``. ``requeued`` puts a
job back in line without a failure (a stalled worker's lease swept, a draining worker's put-back, a worker's
reserve of jobs it had not started given back, a dead letter requeued). A plain arq producer's enqueue cannot
write an event: the pickup writes its ``waiting`` (``announced`` below) just before its ``active``.

The `active` events of one pickup and the `completed` events of one finish call share entries, up to
``EVENTS_PER_ENTRY`` jobs each (``emit_jobs``; ``split_entry`` reads them back, each job's event under its own
id): one ``XADD`` per entry rather than per job.

The totals hash ``arqscale:<queue>:totals`` is incremented by the same scripts (``TOTAL_FIELDS``), so the
counts survive exporter restarts and every exporter replica reads the same numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from arqscale.core.keys import QueueKeys

EVENT_NAMES: Final = (
    "waiting",
    "delayed",
    "active",
    "progress",
    "retrying",
    "completed",
    "failed",
    "dead",
    "cancelled",
    "requeued",
)
# Terminal events: the job is over (its result, if kept, is readable).
FINAL_EVENTS: Final = frozenset({"completed", "dead", "cancelled"})
REQUEUE_REASONS: Final = ("stalled", "drain", "unstarted", "dead_letter")

# The per-queue counters: jobs enqueued (ours, schedules, and plain arq jobs when first picked up), tries
# started, completed, failed (tries), retried, dead, cancelled, requeued, and ``run_ms``: the summed run time
# of the tries that finished (completed, failed, cancelled while running), in ms.
TOTAL_FIELDS: Final = (
    "enqueued",
    "started",
    "completed",
    "failed",
    "retried",
    "dead",
    "cancelled",
    "requeued",
    "run_ms",
)

DEFAULT_MAX_LEN: Final = 10_000
ERROR_EVENT_CHARS: Final = 1000  # an event carries the error's first characters; the full text is in the job
MESSAGE_EVENT_CHARS: Final = 500

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
JOBS_FIELD: Final = "jobs"  # a batched entry's per-job part (``split_entry``)
# Jobs whose `active` (or `completed`) events share one entry at most: a batched entry costs Redis one XADD for
# them all, and keeps the stream's size in bytes within about this factor of one event per entry.
EVENTS_PER_ENTRY: Final = 20

Fields = Mapping[bytes | str, bytes | str]


def events_key(queue: str, *, cluster: bool = False) -> str:
    """The queue's event stream (``keys.QueueKeys.events``; ``cluster``: in the hash-tagged layout)."""
    return QueueKeys.for_queue(queue, "", cluster=cluster).events


def totals_key(queue: str, *, cluster: bool = False) -> str:
    return QueueKeys.for_queue(queue, "", cluster=cluster).totals


def id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def split_entry(entry_id: bytes | str, fields: Fields) -> list[tuple[str, Fields]]:
    """The events one stream entry holds, each with its id: the entry itself, or a batched entry's per-job
    events (``emit_jobs`` in ``EVENTS_LUA``: the entry's id is the first one's, the next ids the others').
    A batched entry's fields are the shared ones plus ``job``, ``try`` and ``duration_ms`` per job; its fields
    stay bytes or str as Redis returned them. A ``jobs`` field that does not parse yields the jobs read before."""
    eid = _text(entry_id)
    packed = fields.get(JOBS_FIELD, fields.get(JOBS_FIELD.encode()))
    if packed is None:
        return [(eid, fields)]
    ms, seq = id_tuple(eid)
    shared = {k: v for k, v in fields.items() if _text(k) != JOBS_FIELD}
    out: list[tuple[str, Fields]] = []
    for n, (job_try, duration, job) in enumerate(unpack_jobs(packed)):
        one: dict[bytes | str, bytes | str] = {**shared, "job": job}
        if job_try:  # an enqueue's `waiting` events have none
            one["try"] = job_try
        if duration:
            one["duration_ms"] = duration
        out.append((f"{ms}-{seq + n}", one))
    return out


def unpack_jobs(packed: bytes | str) -> list[tuple[bytes, bytes, bytes]]:
    """A batched entry's ``jobs``: (try, duration or b"", id) per job. Ids are any bytes: each is length-prefixed."""
    raw = packed if isinstance(packed, bytes) else packed.encode("utf-8", "surrogateescape")
    out: list[tuple[bytes, bytes, bytes]] = []
    at = 0
    while at < len(raw):
        a = raw.find(b" ", at)
        b = raw.find(b" ", a + 1) if a >= 0 else -1
        c = raw.find(b" ", b + 1) if b >= 0 else -1
        size = raw[b + 1 : c]
        if c < 0 or not size.isdigit() or c + 1 + int(size) > len(raw):
            break
        end = c + 1 + int(size)
        out.append((raw[at:a], raw[a + 1 : b], raw[c + 1 : end]))
        at = end
    return out


def pack_jobs(jobs: Sequence[tuple[int, int | None, bytes]]) -> bytes:
    """A batched entry's ``jobs`` field for (try, duration ms or None, id) per job, as ``EVENTS_LUA``'s
    ``emit_jobs`` builds it (``unpack_jobs`` reads it back)."""
    return b"".join(
        b"%d %s %d %s" % (job_try, b"" if duration is None else b"%d" % duration, len(job), job)
        for job_try, duration, job in jobs
    )


def is_stream_id(text: str) -> bool:
    """A complete Redis stream id (``<ms>-<seq>``), as used for ``after`` and ``Last-Event-ID``."""
    if not _STREAM_ID.match(text):
        return False
    ms, seq = text.split("-")
    return int(ms) < 2**64 and int(seq) < 2**64


# The Lua every state-changing script includes (after ``lua.NOW_LUA``: it uses ``now``).
# ``events_to(stream, totals, max_len)`` names this call's queue (max_len 0: no events, counters only);
# ``emit(event, id, name, value, ...)`` appends one entry (pairs whose value is nil, false or '' are left out);
# ``tally(field, n)`` adds to the totals hash; ``worker_of(token)`` is the worker id in a pickup token
# (``<worker id>.<n>``); ``announced(try_before)``: a job our paths wrote an event for has a try counter
# (0 from our enqueue, a schedule or a requeue); a plain arq producer's job has none.
EVENTS_LUA: Final = """
local ev_stream, ev_totals, ev_max, ev_max_s, ev_now_s = '', '', 0, '0', nil
local function events_to(stream, totals, max_len)
  ev_stream, ev_totals, ev_max = stream or '', totals or '', tonumber(max_len) or 0
  ev_max_s = string.format('%d', ev_max)
end
-- Written for speed (it runs once or twice per job): up to four pairs as plain parameters, no vararg table, the
-- numbers shared by every entry formatted once per call, so Redis does not convert them per XADD
-- (bench/redis_cost.py: about a quarter less script time per event than the general loop).
local function emit(event, id, k1, v1, k2, v2, k3, v3, k4, v4, ...)
  if ev_max <= 0 or ev_stream == '' then return end
  if not ev_now_s then ev_now_s = string.format('%d', now) end
  local f = {'XADD', ev_stream, 'MAXLEN', '~', ev_max_s, '*', 'event', event, 'job', id, 'at', ev_now_s}
  local n = 12
  if v1 ~= nil and v1 ~= false and v1 ~= '' then f[n + 1] = k1; f[n + 2] = v1; n = n + 2 end
  if v2 ~= nil and v2 ~= false and v2 ~= '' then f[n + 1] = k2; f[n + 2] = v2; n = n + 2 end
  if v3 ~= nil and v3 ~= false and v3 ~= '' then f[n + 1] = k3; f[n + 2] = v3; n = n + 2 end
  if v4 ~= nil and v4 ~= false and v4 ~= '' then f[n + 1] = k4; f[n + 2] = v4; n = n + 2 end
  local more = select('#', ...)
  if more > 0 then
    local a = {...}
    for i = 1, more, 2 do
      local v = a[i + 1]
      if v ~= nil and v ~= false and v ~= '' then f[n + 1] = a[i]; f[n + 2] = v; n = n + 2 end
    end
  end
  redis.call(unpack(f, 1, n))
end
-- The two events of every job run, `active` and `completed`, written by a direct XADD (no table, no unpack): the
-- same entry as emit's (`try` and `worker` always set), about a fifth less script time per event.
local function ev_on()
  if ev_max <= 0 or ev_stream == '' then return false end
  if not ev_now_s then ev_now_s = string.format('%d', now) end
  return true
end
local function emit_active(id, try, worker)
  if not ev_on() or worker == '' then return emit('active', id, 'try', try, 'worker', worker) end
  redis.call('XADD', ev_stream, 'MAXLEN', '~', ev_max_s, '*', 'event', 'active', 'job', id, 'at', ev_now_s,
             'try', try, 'worker', worker)
end
local function emit_completed(id, try, worker, duration_ms)
  if not ev_on() or try == '' or worker == '' then return emit('completed', id, 'try', try, 'worker', worker,
                                                              'duration_ms', duration_ms) end
  if duration_ms then
    redis.call('XADD', ev_stream, 'MAXLEN', '~', ev_max_s, '*', 'event', 'completed', 'job', id, 'at', ev_now_s,
               'try', try, 'worker', worker, 'duration_ms', duration_ms)
  else
    redis.call('XADD', ev_stream, 'MAXLEN', '~', ev_max_s, '*', 'event', 'completed', 'job', id, 'at', ev_now_s,
               'try', try, 'worker', worker)
  end
end
-- Small integers as text, each formatted once per call: Lua formats a number afresh every time it is concatenated
-- (a fifth of a µs), and tries and id lengths repeat.
local num_memo = {}
local function num_s(n)
  local s = num_memo[n]
  if not s then s = string.format('%d', n); num_memo[n] = s end
  return s
end
-- The `active` or `completed` events of n jobs (ids; tries and durs as text; durs may be nil), up to @PER_ENTRY@ to an
-- entry (docs/events.md, "Batched entries"): one XADD for many jobs rather than one per job. Field `jobs`: per
-- job "<try> <duration ms, or nothing> <id length in bytes> <id>", end to end. The entry's id is the first job's
-- event id; the others take the next ids, which XSETID reserves (the stream's next entry comes after them).
-- A lone job gets the plain one-event entry.
-- " <id length> ", formatted once per length (ids of one producer mostly share theirs).
local len_memo = {}
local function len_tail(l)
  local t = len_memo[l]
  if not t then t = ' ' .. string.format('%d', l) .. ' '; len_memo[l] = t end
  return t
end
-- One batched entry: `packed` is the `jobs` field of m jobs (m > 1), built here or by the caller (a worker sends its
-- successes' fields ready-made: events.pack_jobs).
local function emit_packed(event, worker, packed, m, shared_field)
  -- The shared field: the worker's id (`active`, `completed`), or `func` for an enqueue's `waiting` events.
  local first = redis.call('XADD', ev_stream, 'MAXLEN', '~', ev_max_s, '*', 'event', event, 'at', ev_now_s,
                           shared_field or 'worker', worker, 'jobs', packed)
  if m > 1 then
    local ms, seq = string.match(first, '^(%d+)-(%d+)$')
    redis.call('XSETID', ev_stream, ms .. '-' .. string.format('%d', tonumber(seq) + m - 1))
  end
end
local function emit_jobs(event, worker, ids, tries, durs)
  local n = #ids
  if n == 0 or not ev_on() then return end
  if n == 1 or worker == '' then
    for i = 1, n do
      if event == 'active' then emit_active(ids[i], tries[i], worker)
      else emit_completed(ids[i], tries[i], worker, durs and durs[i]) end
    end
    return
  end
  -- "<try>  <id length> " per try and length, for entries without a duration: two pieces per job for table.concat
  -- instead of four (each piece costs it about as much as a table lookup here).
  local heads = {}
  for from = 1, n, @PER_ENTRY@ do
    -- The pieces end to end, joined once: no string per job (each would be hashed and collected).
    local parts, k = {}, 0
    local to = math.min(from + @PER_ENTRY@ - 1, n)
    for i = from, to do
      local id = ids[i]
      local d = durs and durs[i]
      if d then
        parts[k+1], parts[k+2], parts[k+3], parts[k+4], parts[k+5] = tries[i], ' ', d, len_tail(#id), id
        k = k + 5
      else
        local t, l = tries[i], #id
        local by_len = heads[t]
        if not by_len then by_len = {}; heads[t] = by_len end
        local h = by_len[l]
        if not h then h = t .. ' ' .. len_tail(l); by_len[l] = h end
        parts[k+1], parts[k+2] = h, id
        k = k + 2
      end
    end
    emit_packed(event, worker, table.concat(parts), to - from + 1)
  end
end
local function tally(field, n)
  if ev_totals ~= '' then redis.call('HINCRBY', ev_totals, field, num_s(n or 1)) end
end
local function worker_of(token)
  return string.match(token or '', '^(.*)%.%d+$') or token
end
""".replace("@PER_ENTRY@", str(EVENTS_PER_ENTRY))


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a queue's event stream."""

    id: str  # the stream id, ``<ms>-<seq>``: resume after it
    queue: str
    event: str
    job: str
    at_ms: int
    job_try: int | None = None  # ``try`` in the stream and in JSON
    worker: str | None = None
    func: str | None = None
    delay_ms: int | None = None
    enqueued_ms: int | None = None
    error: str | None = None
    duration_ms: int | None = None
    reason: str | None = None
    progress: float | None = None
    message: str | None = None

    @property
    def final(self) -> bool:
        """The job is over: completed, dead or cancelled."""
        return self.event in FINAL_EVENTS

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape (API, SSE, CLI): ``try`` for ``job_try``, ``at`` for ``at_ms``; absent fields left out."""
        out: dict[str, Any] = {"id": self.id, "queue": self.queue, "event": self.event, "job": self.job}
        out["at"] = self.at_ms
        for name, key in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def parse_entry(cls, queue: str, entry_id: bytes | str, fields: Fields) -> list[Event]:
        """Every event an entry holds (one, or a batched entry's per job: ``split_entry``)."""
        return [cls.parse(queue, event_id, one) for event_id, one in split_entry(entry_id, fields)]

    @classmethod
    def parse(cls, queue: str, entry_id: bytes | str, fields: Fields) -> Event:
        """An entry as XRANGE/XREAD return it. Unknown fields are ignored (a newer writer may add some);
        values that do not parse are left out rather than failing the whole stream."""
        text = {_text(k): _text(v) for k, v in fields.items()}
        return cls(
            id=_text(entry_id),
            queue=queue,
            event=text.get("event", ""),
            job=text.get("job", ""),
            at_ms=_int(text.get("at")) or 0,
            job_try=_int(text.get("try")),
            worker=text.get("worker"),
            func=text.get("func"),
            delay_ms=_int(text.get("delay_ms")),
            enqueued_ms=_int(text.get("enqueued")),
            error=text.get("error"),
            duration_ms=_int(text.get("duration_ms")),
            reason=text.get("reason"),
            progress=_float(text.get("progress")),
            message=text.get("message"),
        )


_OPTIONAL: Final = (
    ("job_try", "try"),
    ("worker", "worker"),
    ("func", "func"),
    ("delay_ms", "delay_ms"),
    ("enqueued_ms", "enqueued"),
    ("error", "error"),
    ("duration_ms", "duration_ms"),
    ("reason", "reason"),
    ("progress", "progress"),
    ("message", "message"),
)


def _text(value: bytes | str) -> str:
    # Job ids are any bytes arq accepts: keep them round-trippable, as the rest of arqscale does.
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except (ValueError, OverflowError):
            return None


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_totals(raw: Mapping[bytes | str, bytes | str]) -> dict[str, int]:
    """The totals hash as ints, every field of ``TOTAL_FIELDS`` present (0 when never counted)."""
    text = {_text(k): _text(v) for k, v in raw.items()}
    return {name: _int(text.get(name)) or 0 for name in TOTAL_FIELDS}


def parse_totals_fields(values: Sequence[bytes | str | None]) -> dict[str, int]:
    """``HMGET <totals> *TOTAL_FIELDS`` as ints: the same answer as ``parse_totals`` of the whole hash."""
    pairs = list(zip(TOTAL_FIELDS, values, strict=True))
    try:  # the scripts write integers: no decoding (the exporter reads 1,000 queues' totals every second)
        return {name: 0 if value is None else int(value) for name, value in pairs}
    except ValueError:  # written by hand: read it as parse_totals does
        return {name: 0 if value is None else _int(_text(value)) or 0 for name, value in pairs}
