"""Schedules in Redis: definitions, next ticks, and the one script that turns a due tick into one job.

Per queue, under ``arqscale:<queue>:schedules`` (docs/design.md, "Schedules"):

- ``schedules`` (hash name -> definition JSON: ``{"origin": "spec"|"api", "schedule": {...}}``),
- ``schedules:next`` (sorted set name -> next tick, epoch ms; no entry while paused or when a cron
  expression never matches again),
- ``schedules:paused`` (set of names),
- ``schedules:last`` (hash name -> JSON of the last job enqueued: ``job_id``, ``tick_ms``, ``at_ms``).

The queue's workers fire the ticks; no other process is needed. A worker reads what is due (``DUE``),
decides in Python (``schedule_spec.decide``: cron arithmetic needs cronsim), then runs ``FIRE``, which
compare-and-sets the stored tick and definition and, in the same script, enqueues the job under the id
``sched:<queue>:<name>:<tick ms>`` in arq's layout as ``producer.ENQUEUE`` does. Whatever the number of
workers, only one CAS per tick succeeds; a worker killed before or after the script leaves the tick either
untouched (someone fires it) or done, never half done; a Redis that lost its last writes lost both halves,
and the tick runs again under the same id. Every "now" is Redis' clock.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from arqscale.core import keys, scores, serializers, tracing
from arqscale.core.events import EVENTS_LUA
from arqscale.core.lua import NOW_LUA, Call, LuaScript, run_scripts
from arqscale.core.producer import PAYLOAD_TTL_MS, UnknownFunctionError, job_payload
from arqscale.core.queue_control import SCHEDULES_WAKE as SCHEDULES_WAKE  # what _wake publishes; see queue_control
from arqscale.core.schedule_spec import Decision, Schedule, ScheduleFields, decide, first_tick_after, job_id
from arqscale.core.spec import QueueSpec, arq_queue

logger = logging.getLogger("arqscale.schedules")

Origin = Literal["spec", "api"]
PutOutcome = Literal["created", "replaced", "unchanged"]
# How often a CAS that lost to another writer is tried again before giving up (someone is rewriting the
# same schedule in a loop; the caller gets an error instead of spinning).
_CAS_TRIES = 5


@dataclass(frozen=True, slots=True)
class ScheduleKeys:
    defs: str
    next: str
    paused: str
    last: str

    @classmethod
    def for_queue(cls, queue: keys.QueueKeys | str) -> ScheduleKeys:
        """The schedule keys of a queue (its ``QueueKeys``, or its name in arq's layout)."""
        base = (f"arqscale:{queue}:" if isinstance(queue, str) else queue.base) + "schedules"
        return cls(defs=base, next=base + ":next", paused=base + ":paused", last=base + ":last")

    def all(self) -> list[str]:
        return [self.defs, self.next, self.paused, self.last]


# ---- the JSON shapes (API, CLI, dashboard) -----------------------------------------------------


# Models built on first use (`defer_build`): a worker imports this module and never validates them (cold start).
class LastJob(BaseModel):
    model_config = ConfigDict(defer_build=True)

    job_id: str
    tick_at: float = Field(description="the tick this job stands for, epoch seconds")
    enqueued_at: float = Field(description="when a worker enqueued it (Redis' clock), epoch seconds")


class ScheduleView(BaseModel):
    """One schedule as stored, with its next run time and its last job."""

    model_config = ConfigDict(defer_build=True)

    queue: str
    name: str
    origin: Origin = Field(description="spec: declared in the queues file (change it there); api: created at run time")
    paused: bool
    next_run_at: float | None = Field(description="epoch seconds; null while paused or when cron never matches again")
    last_job: LastJob | None
    schedule: ScheduleFields | None = Field(description="null when the stored definition is unusable (see problem)")
    problem: str | None = Field(default=None, description="why a stored definition cannot be used")


class ScheduleList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    queue: str
    schedules: list[ScheduleView]


class ScheduleChange(BaseModel):
    model_config = ConfigDict(defer_build=True)

    queue: str
    name: str
    changed: bool = Field(description="false when the schedule already was in that state")


# ---- errors ---------------------------------------------------------------------------------------


class ScheduleNotFoundError(LookupError):
    def __init__(self, queue: str, name: str) -> None:
        super().__init__(f"queue {queue!r} has no schedule {name!r}")


class DeclaredScheduleError(ValueError):
    """A runtime change to a schedule the queues file declares: the workers would undo it at their next start."""

    def __init__(self, queue: str, name: str, action: str) -> None:
        super().__init__(
            f"schedule {name!r} of queue {queue!r} is declared in the queues file; {action} it there "
            "(pause and resume work at run time)"
        )


class ScheduleConflictError(RuntimeError):
    """The schedule kept changing under us (another writer); nothing was written."""


# ---- scripts --------------------------------------------------------------------------------------

# KEYS: defs, paused. ARGV: name. Returns {now, definition or false, paused 0/1}.
READ = LuaScript(
    NOW_LUA
    + """
return {now, redis.call('HGET', KEYS[1], ARGV[1]), redis.call('SISMEMBER', KEYS[2], ARGV[1])}
"""
)

# KEYS: defs. Returns {now, HGETALL defs}.
READ_ALL = LuaScript(NOW_LUA + "return {now, redis.call('HGETALL', KEYS[1])}")

# KEYS: defs, next, paused. ARGV: name, expected definition ('' = none), new definition, next tick ('' = none).
# Compare-and-set: 0 when the definition changed since it was read (the caller reads again). A paused
# schedule stays paused (no next tick) whatever its new definition.
PUT = LuaScript(
    """
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '' or redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
return 1
"""
)

# KEYS: defs, next, paused, last. ARGV: name, expected definition ('' = any). Returns 1 when removed.
REMOVE = LuaScript(
    """
local d = redis.call('HGET', KEYS[1], ARGV[1])
if not d or (ARGV[2] ~= '' and d ~= ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""
)

# KEYS: defs, next, paused. ARGV: name. Returns -1 unknown, 0 already paused, 1 paused now.
PAUSE = LuaScript(
    """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('SADD', KEYS[3], ARGV[1])
"""
)

# KEYS: defs, next, paused. ARGV: name, expected definition, next tick ('' = none).
# Returns -1 unknown or changed meanwhile (read again), 0 not paused, 1 resumed.
RESUME = LuaScript(
    """
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then return -1 end
if redis.call('SREM', KEYS[3], ARGV[1]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
"""
)

# KEYS: next, defs. ARGV: how many due entries at most.
# Returns {now, {name, tick, ...} due, {name, tick} of the earliest entry or {}, {definition or false, ...}}.
DUE = LuaScript(
    NOW_LUA
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local defs = {}
for i = 1, #due, 2 do defs[#defs + 1] = redis.call('HGET', KEYS[2], due[i]) end
return {now, due, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES'), defs}
"""
)

# KEYS: next, defs, last, job, result, queue, the job's try counter (unused), events stream, totals hash.
# ARGV: name, expected tick, expected definition, next tick ('' = none), enqueue 0/1, job id, payload,
#       band offset ms, jitter ms, payload ttl ms, wake channel, function name, events max len.
# The job's `waiting` event (`delayed` under jitter) is written with it, as producer.ENQUEUE does (its payload,
# from producer.job_payload, marks it announced).
# Compare-and-set on the stored tick AND definition: another worker fired this tick already, or the
# schedule was changed, paused or removed since it was read -> 0, nothing written. Otherwise the tick
# advances and (when asked) the job is enqueued exactly as producer.ENQUEUE does, in one script: a
# worker killed around it leaves both or neither. An id that exists (the same tick enqueued before a
# Redis restart lost the advance) is not enqueued twice. Returns 1 fired (job created), 2 fired (no job).
FIRE = LuaScript(
    NOW_LUA
    + EVENTS_LUA
    + """
local tick = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not tick or tonumber(tick) ~= tonumber(ARGV[2]) then return 0 end
if (redis.call('HGET', KEYS[2], ARGV[1]) or '') ~= ARGV[3] then return 0 end
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
end
if ARGV[5] ~= '1' then return 2 end
if redis.call('EXISTS', KEYS[4], KEYS[5]) > 0 then return 2 end
redis.call('PSETEX', KEYS[4], ARGV[10], ARGV[7])
redis.call('ZADD', KEYS[6], string.format('%d', tonumber(ARGV[8]) + now + tonumber(ARGV[9])), ARGV[6])
redis.call('PUBLISH', ARGV[11], '1')
events_to(KEYS[8], KEYS[9], ARGV[13])
if tonumber(ARGV[9]) > 0 then
  emit('delayed', ARGV[6], 'func', ARGV[12], 'delay_ms', ARGV[9])
else
  emit('waiting', ARGV[6], 'func', ARGV[12])
end
tally('enqueued')
redis.call('HSET', KEYS[3], ARGV[1],
  string.format('{"job_id":"%s","tick_ms":%d,"at_ms":%d}', ARGV[6], tonumber(ARGV[2]), now))
return 1
"""
)


def check_schedule(spec: QueueSpec, schedule: Schedule) -> None:
    """What a runtime schedule must agree on with its queue: a function the queue runs, a priority it has."""
    if schedule.function not in spec.function_names and schedule.function not in spec.functions:
        raise UnknownFunctionError(schedule.function, spec)
    scores.check_priority(schedule.priority, spec)


# ---- stored definitions ---------------------------------------------------------------------------


def encode(schedule: Schedule, origin: Origin) -> str:
    """The stored form. Canonical (sorted keys), so workers syncing the same declaration write the same bytes
    and a definition that did not change is not rewritten (its next tick is kept)."""
    body = schedule.model_dump(mode="json", exclude={"name"})
    return json.dumps({"origin": origin, "schedule": body}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Stored:
    name: str
    raw: str
    origin: Origin
    schedule: Schedule | None  # None: the stored JSON is not a valid definition (see problem)
    problem: str | None = None


def decode(name: str, raw: str | bytes) -> Stored:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        data = json.loads(text)
        origin: Origin = "spec" if data.get("origin") == "spec" else "api"
        return Stored(name, text, origin, Schedule.model_validate({**data["schedule"], "name": name}))
    except (ValueError, TypeError, KeyError, AttributeError, ValidationError) as exc:
        return Stored(name, text, "api", None, f"stored definition unusable: {type(exc).__name__}: {exc}")


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _tick_arg(tick: int | None) -> str:
    return "" if tick is None else str(tick)


# ---- the store -------------------------------------------------------------------------------------


class ScheduleStore:
    """One queue's schedules in Redis: what the API, the CLI, Python and the workers read and change."""

    def __init__(self, redis: Redis, spec: QueueSpec) -> None:
        self.redis = redis
        self.spec = spec
        self.queue_keys = keys.QueueKeys.of(spec, redis)
        self.keys = ScheduleKeys.for_queue(self.queue_keys)
        self._declared = set(spec.schedules)

    # reading

    async def views(self) -> list[ScheduleView]:
        pipe = self.redis.pipeline(transaction=not self.queue_keys.cluster)  # a cluster client has no MULTI
        pipe.hgetall(self.keys.defs)
        pipe.zrange(self.keys.next, 0, -1, withscores=True)
        pipe.smembers(self.keys.paused)
        pipe.hgetall(self.keys.last)
        defs, nexts, paused, lasts = await pipe.execute()
        next_by = {_text(n): int(s) for n, s in nexts}
        paused_names = {_text(n) for n in paused}
        last_by = {_text(n): _text(v) for n, v in lasts.items()}
        views = [
            self._view(decode(_text(n), raw), next_by, paused_names, last_by)
            for n, raw in sorted(defs.items(), key=lambda item: _text(item[0]))
        ]
        return views

    async def get(self, name: str) -> ScheduleView:
        for view in await self.views():
            if view.name == name:
                return view
        raise ScheduleNotFoundError(self.spec.name, name)

    def _view(
        self, stored: Stored, next_by: Mapping[str, int], paused: set[str], last_by: Mapping[str, str]
    ) -> ScheduleView:
        nxt = next_by.get(stored.name)
        last = None
        if stored.name in last_by:
            try:
                data = json.loads(last_by[stored.name])
                last = LastJob(job_id=data["job_id"], tick_at=data["tick_ms"] / 1000, enqueued_at=data["at_ms"] / 1000)
            except (ValueError, TypeError, KeyError, ValidationError):
                last = None
        schedule = (
            None
            if stored.schedule is None
            else ScheduleFields.model_validate(stored.schedule.model_dump(exclude={"name"}))
        )
        return ScheduleView(
            queue=self.spec.name,
            name=stored.name,
            origin=stored.origin,
            paused=stored.name in paused,
            next_run_at=None if nxt is None else nxt / 1000,
            last_job=last,
            schedule=schedule,
            problem=stored.problem,
        )

    async def _read(self, name: str) -> tuple[int, str | None, bool]:
        [(now, raw, paused)] = await run_scripts(self.redis, [(READ, [self.keys.defs, self.keys.paused], [name])])
        return int(now), None if raw is None else _text(raw), bool(paused)

    # changing

    async def put(self, schedule: Schedule, *, origin: Origin = "api") -> PutOutcome:
        """Create or replace a schedule. A changed definition starts over at its first tick after now; an
        unchanged one keeps its next tick. A paused schedule stays paused."""
        if origin == "api":
            if schedule.name in self._declared:
                raise DeclaredScheduleError(self.spec.name, schedule.name, "change")
            check_schedule(self.spec, schedule)
        new = encode(schedule, origin)
        for _ in range(_CAS_TRIES):
            now, old, _paused = await self._read(schedule.name)
            if old is not None and origin == "api" and decode(schedule.name, old).origin == "spec":
                raise DeclaredScheduleError(self.spec.name, schedule.name, "change")
            if old == new:
                return "unchanged"
            tick = first_tick_after(schedule, now)
            args = [schedule.name, old or "", new, _tick_arg(tick)]
            [ok] = await run_scripts(self.redis, [(PUT, [self.keys.defs, self.keys.next, self.keys.paused], args)])
            if ok:
                if origin == "api":  # a worker's own sync needs no wake: it looks right after
                    await self._wake()
                return "created" if old is None else "replaced"
        raise ScheduleConflictError(f"schedule {schedule.name!r} kept changing while it was written; try again")

    async def remove(self, name: str) -> bool:
        """Delete a runtime schedule (its definition, next tick, pause and last job). False when unknown."""
        if name in self._declared:
            raise DeclaredScheduleError(self.spec.name, name, "remove")
        _, old, _ = await self._read(name)
        if old is None:
            return False
        if decode(name, old).origin == "spec":  # declared by the workers' queues file, not this process's
            raise DeclaredScheduleError(self.spec.name, name, "remove")
        return await self._remove(name, old)

    async def _remove(self, name: str, expected: str) -> bool:
        [ok] = await run_scripts(self.redis, [(REMOVE, self.keys.all(), [name, expected])])
        return bool(ok)

    async def pause(self, name: str) -> bool:
        """Stop a schedule's ticks (declared ones too). False when it already was paused."""
        [result] = await run_scripts(self.redis, [(PAUSE, [self.keys.defs, self.keys.next, self.keys.paused], [name])])
        if result == -1:
            raise ScheduleNotFoundError(self.spec.name, name)
        return bool(result)

    async def resume(self, name: str) -> bool:
        """Tick again, from the first tick after now (ticks passed while paused do not run)."""
        for _ in range(_CAS_TRIES):
            now, raw, _paused = await self._read(name)
            if raw is None:
                raise ScheduleNotFoundError(self.spec.name, name)
            stored = decode(name, raw)
            tick = None if stored.schedule is None else first_tick_after(stored.schedule, now)
            keys_ = [self.keys.defs, self.keys.next, self.keys.paused]
            [result] = await run_scripts(self.redis, [(RESUME, keys_, [name, raw, _tick_arg(tick)])])
            if result == 1:
                await self._wake()
            if result >= 0:
                return bool(result)
        raise ScheduleConflictError(f"schedule {name!r} kept changing while it was resumed; try again")

    async def _wake(self) -> None:
        """Tell the queue's workers a tick may have come closer. Best effort, after the write: a worker that
        misses it (reconnecting) still looks within ``scheduler.POLL_SECONDS``."""
        # By name: redis-py's asyncio cluster client has no publish(); a PUBLISH reaches every node's subscribers.
        await self.redis.execute_command("PUBLISH", self.queue_keys.wake, SCHEDULES_WAKE)  # type: ignore[no-untyped-call]

    # the workers' side

    async def sync_declared(self) -> list[str]:
        """Write the spec's ``schedules:`` into Redis and drop declared ones the spec no longer has (runtime
        ones stay). Every worker does this at start-up; unchanged definitions keep their next tick, so
        restarts and extra replicas change nothing. One read and one pipelined write for all of them (a
        thousand declarations sync in two round trips). Returns the names written or removed."""
        [(now, flat)] = await run_scripts(self.redis, [(READ_ALL, [self.keys.defs], [])])
        stored = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        writes: list[tuple[Schedule, Call]] = []
        for schedule in self.spec.declared_schedules():
            old, new = stored.get(schedule.name), encode(schedule, "spec")
            if old != new:
                tick = _tick_arg(first_tick_after(schedule, int(now)))
                args = [schedule.name, old or "", new, tick]
                writes.append((schedule, (PUT, [self.keys.defs, self.keys.next, self.keys.paused], args)))
        removals = [
            (name, raw)
            for name, raw in stored.items()
            if name not in self._declared and decode(name, raw).origin == "spec"
        ]
        calls = [call for _, call in writes] + [(REMOVE, self.keys.all(), [name, raw]) for name, raw in removals]
        results = await run_scripts(self.redis, calls) if calls else []
        changed = []
        for (schedule, _), ok in zip(writes, results, strict=False):
            # Lost a race (another replica synced the same spec, or someone changed it meanwhile): the slow path.
            if ok or await self.put(schedule, origin="spec") != "unchanged":
                changed.append(schedule.name)
        changed += [name for (name, _), ok in zip(removals, results[len(writes) :], strict=True) if ok]
        return changed

    async def due(self, limit: int) -> tuple[int, list[tuple[str, int, str | None]], int | None]:
        """Redis' now, the due ``(name, tick, stored definition)`` (at most ``limit``), and the earliest tick."""
        [(now, flat, first, defs)] = await run_scripts(self.redis, [(DUE, [self.keys.next, self.keys.defs], [limit])])
        names = [_text(x) for x in flat[0::2]]
        ticks = [int(float(x)) for x in flat[1::2]]
        raw_defs = [None if d is None else _text(d) for d in defs]
        earliest = int(float(first[1])) if first else None
        return int(now), list(zip(names, ticks, raw_defs, strict=True)), earliest

    async def fire(
        self, name: str, tick: int, raw: str | None, now: int, rand: random.Random
    ) -> tuple[int, Decision | None]:
        """Settle one due tick: enqueue its job (or not) and advance it, atomically, if no one else has.
        Returns the script's answer (0 lost the race, 1 job created, 2 advanced without a job) and the decision."""
        stored = None if raw is None else decode(name, raw)
        if stored is None or stored.schedule is None:
            # A tick with no usable definition would be due forever and crowd out the others: drop the tick,
            # keep the definition for people to see (its problem is in the listing).
            if stored is not None:
                logger.error("queue %s: schedule %s: %s; it does not run", self.spec.name, name, stored.problem)
            args = [name, tick, raw or "", "", 0, "", "", 0, 0, 0, self.queue_keys.wake, "", 0]
            return await self._fire(args, "none"), None
        schedule = stored.schedule
        decision = decide(schedule, tick, now)
        jitter_ms = round(rand.uniform(0, schedule.jitter) * 1000) if schedule.jitter > 0 else 0
        jid = job_id(self.spec.name, name, tick)
        if not decision.enqueue:
            return await self._fire_tick(name, tick, raw, decision, jid, b"", 0, jitter_ms, schedule), decision
        # A tick's job is an enqueue like any other: a `send` span when tracing is on (core/tracing.py).
        with tracing.send_spans(self.spec.name, 1) as spans:
            headers = spans.headers_for(jid, schedule.task_name) if spans is not None else None
            dumps, _ = serializers.for_queue(self.spec.serializer)
            args_ = tuple(schedule.args)
            payload = job_payload(schedule.task_name, args_, schedule.kwargs, now, dumps, headers)
            offset = scores.band_offset(self._priority(schedule), self.spec)
            return await self._fire_tick(name, tick, raw, decision, jid, payload, offset, jitter_ms, schedule), decision

    async def _fire_tick(
        self,
        name: str,
        tick: int,
        raw: str | None,
        decision: Decision,
        jid: str,
        payload: bytes,
        offset: int,
        jitter_ms: int,
        schedule: Schedule,
    ) -> int:
        args = [
            name,
            tick,
            raw,
            _tick_arg(decision.next_tick),
            1 if decision.enqueue else 0,
            jid,
            payload,
            offset,
            jitter_ms if decision.enqueue else 0,
            PAYLOAD_TTL_MS + jitter_ms,
            self.queue_keys.wake,
            schedule.task_name,
            self.spec.events.stream_max,
        ]
        return await self._fire(args, jid)

    def _priority(self, schedule: Schedule) -> int:
        try:
            return scores.check_priority(schedule.priority, self.spec)
        except ValueError as exc:
            # Set at run time against another spec (fewer priority levels now): run it, at the normal priority.
            logger.warning("queue %s: schedule %s: %s; using the normal priority", self.spec.name, schedule.name, exc)
            return self.spec.normal_priority

    async def _fire(self, args: Sequence[Any], jid: str) -> int:
        k = self.keys
        q = self.queue_keys
        script_keys = [
            k.next,
            k.defs,
            k.last,
            q.job(jid),
            q.result(jid),
            q.queue,
            q.retry(jid),
            q.events,
            q.totals,
        ]
        [result] = await run_scripts(self.redis, [(FIRE, script_keys, args)])
        return int(result)


class Schedules:
    """Schedules of every queue, from Python: ``await Schedules(redis, load_queues()).put("q", Schedule(...))``."""

    def __init__(self, redis: Redis, specs: Mapping[str, QueueSpec]) -> None:
        self.redis = redis
        self.specs = dict(specs)

    def store(self, queue: str) -> ScheduleStore:
        return ScheduleStore(self.redis, arq_queue(self.specs, queue))

    async def list(self, queue: str) -> list[ScheduleView]:
        return await self.store(queue).views()

    async def get(self, queue: str, name: str) -> ScheduleView:
        return await self.store(queue).get(name)

    async def put(self, queue: str, schedule: Schedule) -> PutOutcome:
        """Create or replace a runtime schedule."""
        return await self.store(queue).put(schedule)

    async def pause(self, queue: str, name: str) -> bool:
        return await self.store(queue).pause(name)

    async def resume(self, queue: str, name: str) -> bool:
        return await self.store(queue).resume(name)

    async def remove(self, queue: str, name: str) -> bool:
        return await self.store(queue).remove(name)
