"""Per-key counts (docs/design.md, "Per-key limits"): which keys have running or held jobs, and how many.

The keys are listed from the queue's ``g:index`` (a sorted set of key names, all at score 0, so Redis keeps
them in byte order); a page starts after the last key of the previous one, so paging is stable while keys
come and go. One script per page: ``O(log n + page)`` whatever the number of keys or jobs.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys
from arqscale.core.lua import LuaScript, run_scripts
from arqscale.core.spec import QueueSpec

MAX_PAGE = 1000

# KEYS: the queue's group prefix.  ARGV: after ('' = from the start), limit.
# Returns key, running, waiting, ... for up to `limit` keys after `after`.
PAGE_LUA = LuaScript(
    """
local low = '-'
if ARGV[1] ~= '' then low = '(' .. ARGV[1] end
local names = redis.call('ZRANGEBYLEX', KEYS[1] .. 'index', low, '+', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, k in ipairs(names) do
  out[#out+1] = k
  out[#out+1] = tonumber(redis.call('HGET', KEYS[1] .. 'running', k) or '0')
  out[#out+1] = redis.call('ZCARD', KEYS[1] .. 'wait:' .. k)
end
return out
"""
)


class GroupCount(BaseModel):
    key: str
    running: int = Field(description="jobs of this key running now")
    waiting: int = Field(description="jobs held back by this key's limit (counted as `held` in the queue's counts)")


class GroupPage(BaseModel):
    queue: str
    groups: list[GroupCount]
    next_after: str | None = Field(default=None, description="pass as `after` for the next page; null: last page")


class GroupReader:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def page(self, spec: QueueSpec, after: str | None = None, limit: int = 100) -> GroupPage:
        """Keys after ``after`` (in byte order) with running or held jobs, at most ``limit`` (1..1000)."""
        limit = max(1, min(limit, MAX_PAGE))
        prefix = QueueKeys.of(spec, self.redis).groups
        [raw] = await run_scripts(self.redis, [(PAGE_LUA, [prefix], [after or "", limit])])
        groups = [
            GroupCount(key=raw[i].decode(errors="replace"), running=int(raw[i + 1]), waiting=int(raw[i + 2]))
            for i in range(0, len(raw), 3)
        ]
        # The cursor is the raw key (surrogate-escaped), so a key that is not UTF-8 still pages correctly.
        last = raw[-3].decode(errors="surrogateescape") if len(groups) == limit else None
        return GroupPage(queue=spec.name, groups=groups, next_after=last)
