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

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


@dataclass(frozen=True)
class LuaScript:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest())


Call = tuple[LuaScript, Sequence[Any], Sequence[Any]]  # script, keys, args


async def run_scripts(redis: Redis, calls: Sequence[Call]) -> list[Any]:
    """Run the calls in one pipelined round trip (two when a script had to be loaded first)."""
    for attempt in (1, 2):
        pipe = redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            return list(await pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            for source in {script.source for script, _, _ in calls}:
                await redis.script_load(source)
    raise AssertionError("unreachable")  # pragma: no cover
