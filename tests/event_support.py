"""Batched event entries written by the scripts' own Lua (``events.emit_jobs``), for tests of their readers."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from arqscale.core.events import EVENTS_LUA, events_key
from arqscale.core.lua import NOW_LUA, LuaScript, run_scripts

# ARGV: event, worker, then triples id, try, duration ('' = none): the arrays emit_jobs takes.
EMIT = LuaScript(
    NOW_LUA
    + EVENTS_LUA
    + """
events_to(KEYS[1], '', 10000)
local ids, tries, durs = {}, {}, {}
for i = 3, #ARGV, 3 do
  local n = #ids + 1
  ids[n], tries[n] = ARGV[i], ARGV[i + 1]
  if ARGV[i + 2] ~= '' then durs[n] = ARGV[i + 2] end
end
emit_jobs(ARGV[1], ARGV[2], ids, tries, durs)
return 1
"""
)

Job = tuple[bytes, int, int | None]  # id, try, duration ms


async def emit_jobs(redis: Redis, queue: str, event: str, batch: list[Job], worker: str = "w-1") -> None:
    """The `event` events of ``batch`` as a pickup (`active`) or a finish call (`completed`) writes them."""
    args: list[Any] = [event, worker]
    for job_id, job_try, duration in batch:
        args += [job_id, job_try, "" if duration is None else duration]
    await run_scripts(redis, [(EMIT, [events_key(queue)], args)])
