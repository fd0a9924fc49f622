"""Finding a queue's jobs by id prefix, function name and state, in bounded work per call.

The ids come from the queue's own indexes, scanned with ``ZSCAN ... MATCH <prefix>*``: the queue's sorted
set (waiting, delayed and running jobs), the completed index and the dead-letter index (failed). Each
index is scanned for at most ``SCAN_BUDGET`` entries, so a search never walks a million-job queue in one
call; ``complete`` says whether every entry was looked at. The found ids' statuses are read in one
pipelined round trip (``JobStatusReader.read_many``) and filtered by state and function.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from arqscale.core.job_status import JobStatusReader
from arqscale.core.keys import QueueKeys
from arqscale.core.models import JobState, JobStatus
from arqscale.core.spec import QueueSpec

SCAN_BUDGET: Final = 10_000
MAX_RESULTS: Final = 100
# The list states (BullMQ's words) and the job states each one holds.
STATES: Final = {
    "waiting": {JobState.QUEUED},
    "delayed": {JobState.DEFERRED},
    "active": {JobState.ACTIVE},
    "completed": {JobState.COMPLETED, JobState.CANCELLED},
    "failed": {JobState.DEAD, JobState.FAILED},
}


class JobSearch(BaseModel):
    queue: str
    items: list[JobStatus]
    scanned: int = Field(description="index entries looked at")
    complete: bool = Field(description="every entry of the searched indexes was looked at")


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _indexes(keys: QueueKeys, state: str | None) -> list[str]:
    if state == "completed":
        return [keys.completed]
    if state == "failed":
        return [keys.dlq_index]
    if state is None:
        return [keys.queue, keys.completed, keys.dlq_index]
    return [keys.queue]


async def search(
    redis: Redis,
    spec: QueueSpec,
    reader: JobStatusReader,
    *,
    prefix: str = "",
    function: str | None = None,
    state: str | None = None,
    limit: int = 50,
) -> JobSearch:
    keys = QueueKeys.of(spec, redis)
    pattern = glob_escape(prefix) + "*"
    ids: list[str] = []
    seen: set[str] = set()
    scanned, complete = 0, True
    for index in _indexes(keys, state):
        cursor, budget = 0, SCAN_BUDGET
        while True:
            cursor, entries = await redis.zscan(index, cursor, match=pattern, count=1000)
            budget -= 1000
            scanned += len(entries)
            for member, _score in entries:
                job_id = member.decode(errors="replace") if isinstance(member, bytes) else str(member)
                if job_id not in seen:
                    seen.add(job_id)
                    ids.append(job_id)
            if cursor == 0:
                break
            if budget <= 0:
                complete = False
                break
    wanted = STATES.get(state or "")
    items: list[JobStatus] = []
    for start in range(0, len(ids), 500):
        for status in await reader.read_many(ids[start : start + 500]):
            if wanted is not None and status.state not in wanted:
                continue
            if function and status.function != function:
                continue
            if status.state is JobState.NOT_FOUND:
                continue
            items.append(status)
            if len(items) >= limit:
                return JobSearch(queue=spec.name, items=items, scanned=scanned, complete=False)
    return JobSearch(queue=spec.name, items=items, scanned=scanned, complete=complete)
