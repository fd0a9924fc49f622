"""Running Lua scripts in one round trip.

redis-py's ``Script`` objects send ``SCRIPT EXISTS`` before every pipeline that holds one: a second
round trip on every call. arqscale sends plain ``EVALSHA`` and loads a script only when Redis answers
``NOSCRIPT`` (first use, or after a restart emptied the script cache). When a script is missing
nothing has run, so running the calls again is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arqscale.core.events import EVENTS_LUA
from arqscale.core.keys import OWN_CHANGE_SUFFIX
from arqscale.core.scores import BAND, LEASED, PARK, PARKED_FLOOR

if TYPE_CHECKING:
    from arqscale.core.keys import QueueKeys

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LuaScript:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest())

    @property
    def head(self) -> list[str]:
        """How a call of it starts: ``EVALSHA <sha>``, then the key count, keys and arguments."""
        return ["EVALSHA", self.sha]


@dataclass(frozen=True)
class LibraryFunction:
    """One function of a loaded ``LuaLibrary``, called as a script is (``Call``): ``FCALL <name>``."""

    library: LuaLibrary
    key: str

    @property
    def head(self) -> list[str]:
        return ["FCALL", self.library.function(self.key)]


Call = tuple["LuaScript | LibraryFunction", Sequence[Any], Sequence[Any]]  # script, keys, args
YIELD_EVERY = 100  # replies read between two yields to the event loop (PreparedCalls)

# A cluster-layout key's queue prefix, ``arqscale:{<queue>}:``, read from the script's first key.
_CLUSTER_BASE = """local _kb = string.match(KEYS[1] or '', '^arqscale:{[^}]*}:')
if not _kb then return redis.error_reply('arqscale: KEYS[1] is not a key of a cluster-layout queue') end
"""


@dataclass(frozen=True)
class LuaTemplate:
    """A script that names a queue's per-job keys (``'@JOB@' .. id``, ``'@IP@' .. id``, ...), in both layouts.

    In arq's layout the tokens become arq's fixed prefixes (``arq:job:``). In the cluster layout a job's
    keys carry its queue's hash tag (``arqscale:{<queue>}:job:``): the script reads the queue's prefix
    from its first key, which is always a key of the same queue, so one script serves every queue (a
    script text per queue would fill each node's script cache with a copy per queue)."""

    source: str
    arq: LuaScript = field(init=False)
    cluster: LuaScript = field(init=False)

    def __post_init__(self) -> None:
        from arqscale.core.keys import QueueKeys

        arq_text, cluster_text = arq_layout(self.source), self.source
        tagged = QueueKeys.for_queue("q", "", cluster=True)
        for name in QueueKeys.for_queue("q", "").lua_prefixes():
            suffix = tagged.lua_prefixes()[name].removeprefix(tagged.base)
            cluster_text = cluster_text.replace(f"'@{name}@'", f"(_kb .. '{suffix}')")
        leftover = sorted(set(re.findall(r"@[A-Z_]+@", cluster_text)))
        if leftover:  # a token outside quotes, or one no layout knows: a bug in a script, caught at import
            raise ValueError(f"Lua template: tokens left after substitution: {', '.join(leftover)}")
        object.__setattr__(self, "arq", LuaScript(arq_text))
        object.__setattr__(self, "cluster", LuaScript(_CLUSTER_BASE + cluster_text))

    def for_keys(self, keys: QueueKeys) -> LuaScript:
        """The script for a queue whose keys are ``keys``."""
        return self.cluster if keys.cluster else self.arq


def arq_layout(text: str) -> str:
    """A script's per-job key tokens (``'@JOB@'``, ...) as arq's fixed prefixes (``arq:job:``)."""
    from arqscale.core.keys import QueueKeys

    for name, prefix in QueueKeys.for_queue("q", "").lua_prefixes().items():
        text = text.replace(f"@{name}@", prefix)
    return text


# The top-level locals of a prelude that hold one call's state (``events_to``'s stream, ``gbase``, ...): a
# ``local a, b = x, y`` line that declares no function. Caches of pure formatting keep their entries.
_STATE_LINE = re.compile(r"^local (?!function\b)([\w, ]+?) = (.+)$", re.MULTILINE)
PRELUDE_CACHES = frozenset({"num_memo", "len_memo"})


def prelude_state(prelude: str) -> list[tuple[str, str]]:
    """(names, initial values) of each state line of ``prelude``, caches left out."""
    found = []
    for names, values in _STATE_LINE.findall(prelude):
        if {n.strip() for n in names.split(",")} <= PRELUDE_CACHES:
            continue
        found.append((names, values))
    return found


@dataclass(frozen=True)
class LuaLibrary:
    """Scripts that share a prelude, loaded as one Redis Functions library (``FUNCTION LOAD``, called by ``FCALL``).

    An ``EVALSHA`` runs its whole script each call: the prelude's ~35 helper closures are made again every time,
    about 37,500 of Redis' instructions a call (bench/redis_instructions.py; a worker's pickup with one job costs
    ~320,000), which at a trickle is a job's share. A library runs its top level once, at the first call: the
    helpers are made once and each function only resets the prelude's per-call state (``prelude_state``) and
    reads Redis' clock. The library's name carries a hash of its code, so versions of arqscale sharing a Redis
    during a rolling upgrade each call their own functions. arq's key layout only (Redis Cluster keeps
    ``EVALSHA``: a library would have to be loaded on every primary). ``bodies``: (key, script body) pairs, the
    body as ``NOW_LUA`` + ``prelude`` + body would run it under ``EVALSHA`` (its ``KEYS``, ``ARGV``, ``now``)."""

    prefix: str
    prelude: str
    bodies: tuple[tuple[str, str], ...]
    name: str = field(init=False)
    code: str = field(init=False)

    def __post_init__(self) -> None:
        reset = "\n".join(f"    {names} = {values}" for names, values in prelude_state(self.prelude))
        functions = "".join(
            f"  f[{key!r}] = function(KEYS, ARGV)\n    begin()\n{arq_layout(body)}\n  end\n"
            for key, body in self.bodies
        )
        # Globals are read at the first call, not at load: a library's top level sees only the loading API.
        body = f"""local impl
local function make()
  local redis, tonumber, unpack, string, math = redis, tonumber, unpack, string, math
  local now
{arq_layout(self.prelude)}
  local function begin()
{reset}
    local _t = redis.call('TIME')
    now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000 + 0.5)
  end
  local f = {{}}
{functions}  return f
end
"""
        digest = hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()[:12]
        name = f"{self.prefix}_{digest}"
        registered = "".join(
            f"redis.register_function('{name}_{key}', function(keys, args)\n"
            f"  if not impl then impl = make() end\n  return impl[{key!r}](keys, args)\nend)\n"
            for key, _ in self.bodies
        )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "code", f"#!lua name={name}\n{body}{registered}")

    def function(self, key: str) -> str:
        """The ``FCALL`` name of the body ``key``."""
        return f"{self.name}_{key}"

    async def load(self, redis: Redis) -> bool:
        """Load the library unless it is there. False when this Redis cannot or may not: before 7.0 (no
        ``FUNCTION``), or a user whose ACL refuses it. A lost connection raises, as any call's would."""
        try:
            await redis.execute_command("FUNCTION", "LOAD", self.code)  # type: ignore[no-untyped-call]
        except ResponseError as exc:
            if "already exists" in str(exc):
                return True
            logger.info("Redis Functions unavailable (%s): scripts go by EVALSHA", exc)
            return False
        return True


class LibraryUse:
    """Whether one client's calls go by a library's ``FCALL``: not known until the first call loads the library
    (None), then True, or False where Redis cannot or may not (they go by ``EVALSHA``)."""

    def __init__(self, library: LuaLibrary, redis: Redis, *, possible: bool) -> None:
        self.library, self.redis = library, redis
        self.loaded: bool | None = None if possible else False

    async def ready(self) -> bool:
        """Whether to call by ``FCALL`` now. The first call (and the first after ``lost``) loads the library; Redis
        unreachable leaves it unknown: the call that follows fails as well, and the next one tries again."""
        if self.loaded is None:
            with contextlib.suppress(RedisError, OSError):
                self.loaded = await self.library.load(self.redis)
        return bool(self.loaded)

    def lost(self) -> None:
        """Redis answered that a function is missing (a ``FUNCTION FLUSH``, a restart): load it on the next call."""
        if self.loaded:
            self.loaded = None


async def fcall(redis: Redis, function: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """``FCALL function``: a library's function, as ``EVALSHA`` calls a script (redis-py's own ``fcall`` is typed
    for the sync and the async client at once)."""
    return await redis.execute_command("FCALL", function, len(keys), *keys, *args)  # type: ignore[no-untyped-call]


def missing_function(error: object) -> bool:
    """An ``FCALL`` error saying the function is not there (a ``FUNCTION FLUSH``, a restart without persistence)."""
    return isinstance(error, ResponseError) and "Function not found" in str(error)


def not_loaded(error: object) -> bool:
    """Redis lacked what the call named, its script (``NOSCRIPT``) or its library's function: nothing ran."""
    return isinstance(error, NoScriptError) or missing_function(error)


async def load_missing(redis: Redis, calls: Sequence[Call]) -> None:
    """Load what the calls name (their scripts, their functions' libraries): after ``NOSCRIPT`` or a missing function
    nothing has run, so the calls may go again."""
    for script in {script for script, _, _ in calls}:
        if isinstance(script, LibraryFunction):
            await script.library.load(redis)
        else:
            await redis.script_load(script.source)


async def run_scripts(redis: Redis, calls: Sequence[Call], then: Sequence[Sequence[Any]] = ()) -> list[Any]:
    """Run the calls in one pipelined round trip (two when a script or library had to be loaded first).

    ``then``: plain commands sent after the scripts on the same connection, their replies appended (a
    ``WAIT`` must follow the writes on their own connection: it counts that connection's writes only)."""
    for attempt in (1, 2):
        pipe = redis.pipeline(transaction=False)
        for script, keys, args in calls:
            # execute_command, not pipe.evalsha: redis-py's cluster pipeline refuses the latter by name
            pipe.execute_command(*script.head, len(keys), *keys, *args)
        for command in then:
            pipe.execute_command(*command)
        try:
            return list(await pipe.execute())
        except ResponseError as exc:
            if attempt == 2 or not not_loaded(exc):
                raise
            await load_missing(redis, calls)
    raise AssertionError("unreachable")  # pragma: no cover


def pack(commands: Sequence[Sequence[str | bytes | int | float]]) -> bytes:
    """Commands in RESP, as redis-py would send them (str as UTF-8, int in decimal, float as its repr)."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int) and not isinstance(arg, bool):
                arg = b"%d" % arg
            elif isinstance(arg, float):
                arg = repr(arg).encode()
            elif not isinstance(arg, bytes):
                raise TypeError(f"cannot pack {type(arg).__name__} {arg!r} into a Redis command")
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class PreparedCalls:
    """Script calls and plain commands whose every argument is fixed, packed into RESP once.

    The exporter sends the same calls every refresh (one ``EVALSHA`` with six keys per queue, one ``HMGET`` per
    queue): redis-py packs each argument again on every call, which at 1,000 queues was ~25 ms of a
    refresh's ~90 ms of exporter CPU. Here the bytes are built once and written as they are; replies are
    Redis' own (no redis-py response callbacks), read in order on one pooled connection. One round trip,
    and a second only when a script had to be loaded (``NOSCRIPT``). A client without a connection pool
    (a cluster client) gets ``run_scripts``, the same calls through a pipeline.
    """

    def __init__(self, calls: Sequence[Call], then: Sequence[Sequence[Any]] = ()) -> None:
        self.calls = list(calls)
        self.then = [list(command) for command in then]
        commands = [[*script.head, len(keys), *keys, *args] for script, keys, args in self.calls]
        self.packed = pack(commands + self.then)
        self.replies = len(commands) + len(self.then)

    async def run(self, redis: Redis) -> list[Any]:
        """The replies, scripts' first then the plain commands', as ``run_scripts`` returns them."""
        if not isinstance(redis, Redis):  # pragma: no cover - no other client type in use today
            return await run_scripts(redis, self.calls, self.then)
        for attempt in (1, 2):
            replies = await self._exchange(redis)
            errors = [r for r in replies if isinstance(r, ResponseError)]
            if not errors:
                return replies
            if attempt == 1 and all(not_loaded(e) for e in errors):
                await load_missing(redis, self.calls)
                continue
            raise next((e for e in errors if not not_loaded(e)), errors[0])
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(self, redis: Redis) -> list[Any]:
        return await exchange(redis, self.packed, self.replies)


async def exchange(redis: Redis, packed: bytes, count: int) -> list[Any]:
    """Write ``packed`` on one pooled connection and read ``count`` replies, error replies in their place.

    As redis-py's pipeline: a connection error drops the connection and is retried as the client's retry
    policy says; an error reply (``ResponseError``) is returned, not raised, so the connection stays in step."""
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:

        async def send_and_read() -> list[Any]:
            await conn.send_packed_command(packed)
            return await _read_replies(conn, count)

        async def failed(error: BaseException) -> None:
            await conn.disconnect()
            retry_on = conn.retry_on_error
            if not retry_on or not isinstance(error, tuple(retry_on)):
                raise error

        result: list[Any] = await conn.retry.call_with_retry(send_and_read, failed)
        return result
    finally:
        await pool.release(conn)


async def _read_replies(conn: Any, count: int) -> list[Any]:
    """``count`` replies, error replies as ``ResponseError`` values (the connection stays in step).

    One timeout (the connection's socket timeout) for all of them: ``Connection.read_response`` arms and
    disarms a timer per reply, which at the exporter's 1,000 replies per refresh was ~5-10 ms of CPU. The
    parser is redis-py's own (``_parser``, the one ``read_response`` uses, which returns error replies as
    values); a connection without one is read reply by reply."""
    replies: list[Any] = []
    parse = getattr(getattr(conn, "_parser", None), "read_response", None)
    if parse is None:  # pragma: no cover - every redis-py 5 connection has a parser
        for _ in range(count):
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    try:
        async with asyncio.timeout(conn.socket_timeout):
            for i in range(count):
                replies.append(await parse())
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    # Buffered replies are read without suspending: let requests in between.
                    await asyncio.sleep(0)
    except TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError(f"Timeout reading {count} replies") from None
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while reading replies: {exc}") from exc
    except BaseException:  # cancelled mid-read: the rest of the replies would greet the next user
        await conn.disconnect(nowait=True)
        raise
    return replies


@dataclass(frozen=True, slots=True)
class _Waiting:
    """One caller's part of a batch (``CallBatcher``)."""

    calls: Sequence[Call]
    then: Sequence[Sequence[Any]]
    wake: Sequence[tuple[Any, ...]]
    future: asyncio.Future[list[Any]]


class CallBatcher:
    """Script calls of concurrent callers sent together: one write and one read on one connection for all
    the calls made in the same turn of the event loop.

    Meant for a server that enqueues on behalf of many concurrent requests (the HTTP API): on the machines
    measured, a socket write costs 50-300 µs, as much as everything else an enqueue does in Python, and
    under load many requests are parsed in the same turn of the loop. A lone call waits for nothing: the
    batch is sent at the end of the turn it was made in (``call_soon``), and several batches may be in
    flight at once, each on its own pooled connection. Each caller gets its own replies; an error reply
    is raised to the caller whose call it was, a lost connection to every caller of that batch. Calls
    that meet ``NOSCRIPT`` are run again through ``run_scripts``, which loads the script.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiting: list[_Waiting] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def run(
        self, calls: Sequence[Call], then: Sequence[Sequence[Any]] = (), wake: Sequence[tuple[Any, ...]] = ()
    ) -> list[Any]:
        """The replies of ``calls`` and of the plain commands ``then`` sent after them, as ``run_scripts`` returns
        them. Another caller's commands may come between this caller's calls and its ``then``. ``wake``: the
        commands that wake workers (``producer.wake_commands``), sent after every call of the batch, each once
        per batch however many callers name it (their replies are not returned)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append(_Waiting(calls, then, wake, future))
        replies = await future
        if any(not_loaded(r) for r in replies):
            # Loads the script; an existing id is not enqueued twice (a wake-up may be published twice).
            return (await run_scripts(self.redis, calls, [*then, *wake]))[: len(calls) + len(then)]
        return replies

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._flushes.add(task)  # a reference, so the task is not collected mid-flight
            task.add_done_callback(self._flushes.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        commands: list[list[Any]] = []
        for w in batch:
            commands += [[*script.head, len(keys), *keys, *args] for script, keys, args in w.calls]
            commands += [list(command) for command in w.then]
        # dict, not set: the wake-ups in the order their callers came
        commands += [list(command) for command in dict.fromkeys(c for w in batch for c in w.wake)]
        try:
            replies = await exchange(self.redis, pack(commands), len(commands))
        except Exception as exc:
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutdown): so are its callers
            for w in batch:
                w.future.cancel()
            raise
        at = 0
        for w in batch:
            calls, then, future = w.calls, w.then, w.future
            mine = replies[at : at + len(calls) + len(then)]
            at += len(calls) + len(then)
            if future.done():  # its caller went away (a client that disconnected)
                continue
            error = next((r for r in mine if isinstance(r, ResponseError) and not not_loaded(r)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)


# A job's try counter (``arq:retry:<id>``) outlives the payload's own TTL (see producer.PAYLOAD_TTL_MS) so a job
# retried late keeps its count.
RETRY_TTL_MS = 15 * 86_400_000

# Redis keeps the time: every script that needs "now" reads Redis' clock, never the caller's (pods
# disagree by seconds, and a clock ahead would make other workers' live leases look expired). Rounded
# to the ms as arq rounds its own timestamps, so a plain arq job is ready in the ms it was enqueued.
NOW_LUA = """
-- Locals, not globals: a global is a table lookup on every use, and the hot loops use these per job.
local redis, KEYS, ARGV, tonumber, unpack, string, math = redis, KEYS, ARGV, tonumber, unpack, string, math
-- Numbers handed to redis.call are formatted by Redis 7.0 with "%.17g" (about 2,500 instructions each, several
-- per call: bench/redis_instructions.py), and Lua's own number-to-text uses "%.14g": the hot scripts pass text,
-- made with string.format('%d') or num_s (events.EVENTS_LUA), an integer format ten times cheaper.
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000 + 0.5)
"""

# The ownership record of a running job, and what every script does with it (docs/design.md, Ownership):
# ``arq:in-progress:<id>`` = "<queue score> <try> <token>". arq only checks that the key exists. The try being run
# lives here, not in the try counter (``arq:retry:<id>``, the tries before this one while the job runs): a pickup
# then writes one key per job, not two. Whatever ends a lease other than a success writes the counter (a retry,
# a sweep, a put-back). Records from before the try moved here, "<queue score> <token>", still read (try nil).
# ``split_lease``: score, owner token, try of a record (nil, nil, nil for arq's own "1" or nothing).
# ``band_of``: the priority band a score sits in (nearest band, as ``scores.split_score``).
# ``sweep``: return up to ``limit`` jobs whose lease expired (their worker died or stalled) from their
# parking place (``scores.LEASED``) to their own score, so they keep their place in line; returns how many.
# Each one returned writes its ``requeued`` event (reason ``stalled``). ``leased_s``: the parked score of a
# lease expiring at ``ms``. Includes ``events.EVENTS_LUA``.
LEASE_LUA = (
    EVENTS_LUA
    + """
local function split_lease(v)
  if not v then return nil, nil, nil end
  local sp = string.find(v, ' ', 1, true)
  if not sp then return nil, nil, nil end
  local sp2 = string.find(v, ' ', sp + 1, true)
  if sp2 then
    local try = tonumber(string.sub(v, sp + 1, sp2 - 1))
    if try then return string.sub(v, 1, sp - 1), string.sub(v, sp2 + 1), try end
  end
  return string.sub(v, 1, sp - 1), string.sub(v, sp + 1), nil
end
local function lease_of(id)
  return split_lease(redis.call('GET', '@IP@' .. id))
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
-- Whether this call made a job ready in the queue (a sweep, a held job let back, a retry, a put-back): then the
-- queue key's invalidation must wake the idle workers, and ``own_change`` leaves no mark (see keys.own_change).
local queue_added = false
local function own_change(kq)
  if not queue_added then redis.call('SET', kq .. '@OWN@', '1', 'PX', '86400000') end
end
local function group_tidy(k)
  if redis.call('HEXISTS', gbase .. 'running', k) == 0 and redis.call('EXISTS', gbase .. 'wait:' .. k) == 0 then
    redis.call('ZREM', gbase .. 'index', k)
    redis.call('ZREM', gbase .. 'timers', k)
  end
end
-- Up to n held jobs of key k back into the queue, each under its own score (its place in line).
local function group_back(kq, k, n)
  local popped = redis.call('ZPOPMIN', gbase .. 'wait:' .. k, n)
  if #popped > 0 then queue_added = true end
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
local function leased_s(ms)
  return string.format('%d', @LEASED@ + ms)
end
local function requeued_stalled(id, owner, try)
  queue_added = true
  -- The try that stalled counts: the counter takes it from the record (a record from before has it there).
  if try then redis.call('SET', '@RETRY@' .. id, try, 'PX', @RETRY_TTL@) end
  emit('requeued', id, 'try', try or redis.call('GET', '@RETRY@' .. id), 'worker', owner and worker_of(owner),
       'reason', 'stalled')
  tally('requeued')
end
-- Leases kept in the queue's `active` set, by workers from before the lease moved into the parked score
-- (scores.LEASED): swept as they were while any remain (a rolling upgrade).
local function sweep_active(kq, ka, limit)
  local expired = redis.call('ZRANGEBYSCORE', ka, '-inf', '(' .. string.format('%d', now), 'LIMIT', '0', num_s(limit))
  for _, id in ipairs(expired) do
    local score, owner, try = lease_of(id)
    redis.call('ZREM', ka, id)
    group_release(kq, id)
    local queued = redis.call('ZSCORE', kq, id)
    local back = false
    if queued and tonumber(queued) >= @FLOOR@ and tonumber(queued) < @LEASED@ then
      -- Parked while it ran: back under its own score (its place in line), ownership gone.
      redis.call('ZADD', kq, score or string.format('%d', tonumber(queued) - @PARK@), id)
      redis.call('DEL', '@IP@' .. id)
      back = true
    elseif not queued and redis.call('EXISTS', '@JOB@' .. id) == 1 then
      -- Its queue entry is gone (a worker from before parking, or removed by hand): ready now.
      redis.call('ZADD', kq, score or now, id)
      redis.call('DEL', '@IP@' .. id)
      back = true
    end
    if back then requeued_stalled(id, owner, try) end
    -- Else still queued under its own score (a worker that keeps running jobs there holds it), or taken again
    -- under a lease of its own: leave it.
  end
  return #expired
end
-- Expired leases (scores.LEASED): each job back under its own score from its ownership record (its place in
-- line; ready now when the record is gone), ownership gone. ``with_active``: the `active` set's too (above).
local function sweep(kq, ka, limit, with_active)
  local expired = redis.call('ZRANGEBYSCORE', kq, '@LEASED@', '(' .. leased_s(now), 'LIMIT', '0', num_s(limit))
  for _, id in ipairs(expired) do
    local score, owner, try = lease_of(id)
    group_release(kq, id)
    redis.call('ZADD', kq, score or string.format('%d', now), id)
    redis.call('DEL', '@IP@' .. id)
    requeued_stalled(id, owner, try)
  end
  local n = #expired
  if with_active and n < limit and redis.call('EXISTS', ka) == 1 then n = n + sweep_active(kq, ka, limit - n) end
  return n
end
""".replace("@HALF@", str(BAND // 2))
    .replace("@BAND@", str(BAND))
    .replace("@FLOOR@", str(PARKED_FLOOR))
    .replace("@OWN@", OWN_CHANGE_SUFFIX)
    .replace("@PARK@", str(PARK))
    .replace("@RETRY_TTL@", str(RETRY_TTL_MS))
    .replace("@LEASED@", str(LEASED))
)
