"""A job's log lines: what its tasks wrote through ``ctx["log"]`` and ``logging`` while they ran.

Stored in ``arqscale:logs:<id>``, a Redis list of compact JSON entries (``{"t": ms, "n": try, "l": level,
"m": text}``), appended in batches by ``APPEND_LUA``, which enforces the queue's caps (``logs.max_lines`` and
``logs.max_bytes`` across all the job's tries): the first batch that would pass a cap is cut there and a
single truncation mark (``{"x":1,...}``) is appended, after which nothing more is stored.

Retention follows the job's result (docs/design.md, "Job logs"): while the job lives the list carries the
try counter's long TTL (set only when it has none, so a late line never stretches a finished job's TTL);
``pickup.FINISH_LUA`` gives it the result's TTL when the job completes, dies or is cancelled, and every script
that deletes a result (trimming, dead-letter purge) deletes the log with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from arqscale.core import keys
from arqscale.core.lua import LuaScript, run_scripts
from arqscale.core.models import JobLogLine, JobLogPage
from arqscale.core.safe_data import clipped
from arqscale.core.spec import JobLogSettings, QueueSpec

TRUNCATED_PREFIX = '{"x":1'
TRUNCATED_LEVEL = "TRUNCATED"
# While the job lives: as long as its try counter (``lua.RETRY_TTL_MS``); its outcome sets the real one.
LIVE_TTL_MS = 15 * 86_400_000
MAX_PAGE = 5000

# KEYS: the job's log list.  ARGV: max lines, max bytes, live ttl ms, truncation mark, entries...
# Returns how many entries were stored. Summing the stored sizes reads the whole list (at most max_lines
# entries): appends come in batches (one per worker flush), not one per line, so this stays cheap.
APPEND_LUA = LuaScript(
    """
local key = KEYS[1]
local maxl, maxb = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = redis.call('LLEN', key)
if n > 0 and string.sub(redis.call('LINDEX', key, -1), 1, 6) == '@MARK@' then return 0 end
local used = 0
if n > 0 then
  for _, v in ipairs(redis.call('LRANGE', key, 0, -1)) do used = used + #v end
end
local stored = 0
for i = 5, #ARGV do
  local v = ARGV[i]
  if n + 1 > maxl or used + #v > maxb then
    redis.call('RPUSH', key, ARGV[4])
    break
  end
  redis.call('RPUSH', key, v)
  n, used, stored = n + 1, used + #v, stored + 1
end
redis.call('PEXPIRE', key, ARGV[3], 'NX')
return stored
""".replace("@MARK@", TRUNCATED_PREFIX)
)


def entry(at_ms: int, attempt: int, level: str, message: str, limits: JobLogSettings) -> str:
    """One stored line: the message clipped to ``max_line_chars`` and made encodable (a task's text may hold
    lone surrogates, NULs, escapes: JSON keeps each as it was, and Redis gets valid UTF-8)."""
    text = clipped(message, limits.max_line_chars)
    return json.dumps({"t": at_ms, "n": attempt, "l": level, "m": text}, separators=(",", ":"))


def truncation_mark(at_ms: int, limits: JobLogSettings) -> str:
    text = f"log truncated: this job's log keeps at most {limits.max_lines} lines and {limits.max_bytes} bytes"
    return f'{TRUNCATED_PREFIX},"t":{at_ms},"m":{json.dumps(text)}}}'


async def append(redis: Redis, key: str, entries: list[str], limits: JobLogSettings) -> int:
    """Store ``entries`` (from ``entry``) in the job's log ``key`` (``QueueKeys.logs``) under the caps;
    returns how many were kept."""
    if not entries or limits.max_lines == 0 or limits.max_bytes == 0:
        return 0
    mark = truncation_mark(int(json.loads(entries[-1])["t"]), limits)
    args: list[Any] = [limits.max_lines, limits.max_bytes, LIVE_TTL_MS, mark, *entries]
    [stored] = await run_scripts(redis, [(APPEND_LUA, [key], args)])
    return int(stored)


def parse(raw: bytes) -> JobLogLine:
    """A stored entry as a line; anything unreadable (written by hand, another version) shown as text."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError
        level = TRUNCATED_LEVEL if data.get("x") == 1 else str(data.get("l", "INFO"))
        attempt = data.get("n")
        return JobLogLine(
            at=float(data.get("t", 0)) / 1000,
            attempt=attempt if isinstance(attempt, int) else None,
            level=clipped(level, 20),
            message=clipped(str(data.get("m", "")), 1_048_576),
        )
    except (ValueError, TypeError):
        return JobLogLine(at=0, level="INFO", message=raw.decode("utf-8", errors="replace"))


async def log_key(redis: Redis, specs: Mapping[str, QueueSpec], job_id: str) -> str | None:
    """Where the job's lines are: arq's layout has one place for every queue; in the cluster layout the key
    carries the job's queue, found by reading its status (None: no such job on these queues)."""
    if not keys.is_cluster(redis):
        return keys.logs_key(job_id)
    from arqscale.core.job_status import JobStatusReader  # job_status imports the models this module does

    spec = specs.get((await JobStatusReader(redis, specs).read(job_id)).queue or "")
    return None if spec is None else keys.QueueKeys.of(spec, redis).logs(job_id)


async def read(redis: Redis, job_id: str, offset: int = 0, limit: int = 1000, *, key: str | None = None) -> JobLogPage:
    """A page of the job's lines, oldest first (no lines: an empty page; the caller tells unknown jobs apart).
    ``key``: where they are (``log_key``), arq's layout when not given."""
    key = key or keys.logs_key(job_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.llen(key)
        pipe.lrange(key, offset, offset + limit - 1)
        pipe.lindex(key, -1)
        total, raw, last = await pipe.execute()
    truncated = last is not None and bytes(last).startswith(TRUNCATED_PREFIX.encode())
    return JobLogPage(
        job_id=job_id, total=int(total), offset=offset, lines=[parse(r) for r in raw], truncated=truncated
    )


def as_text(lines: list[JobLogLine]) -> str:
    """Lines as people read them in a terminal: time, try, level, message (continuation lines indented)."""
    from datetime import UTC, datetime

    out = []
    for line in lines:
        when = datetime.fromtimestamp(line.at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if line.at else "-"
        attempt = f"try {line.attempt}" if line.attempt is not None else "-"
        body = line.message.replace("\n", "\n    ")
        out.append(f"{when} {attempt} {line.level}: {body}")
    return "\n".join(out)
