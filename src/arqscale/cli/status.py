"""``arqscale status [JOB_ID]``: counts per queue as a table (or JSON), or one job's status.

``arqscale status QUEUE --state waiting`` lists a page of the queue's jobs in that state instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable

from redis.asyncio import Redis

from arqscale.cli._common import ENCODED_HELP, UsageError, arq_spec, job_id_argument, run_with_redis, shown_id
from arqscale.core import counts_table
from arqscale.core.config import Config
from arqscale.core.counts import CountsReader
from arqscale.core.job_listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, JobList, JobLister, JobSummary, ListState
from arqscale.core.job_status import JobStatusReader
from arqscale.core.live_workers import live_workers
from arqscale.core.models import JobState, JobStatus
from arqscale.core.safe_data import model_json, safe_copy

HELP = "show counts per queue, a queue's jobs by state, or one job's status"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "job_id",
        metavar="JOB_ID|QUEUE",
        nargs="?",
        help="show this job instead of the queue table; with --state, the queue whose jobs to list",
    )
    parser.add_argument("--encoded", action="store_true", help=ENCODED_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--state",
        choices=[s.value for s in ListState],
        help="list the jobs of the queue named by the argument in this state, instead",
    )
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"with --state: jobs to show (1-{MAX_LIMIT})")
    parser.add_argument("--offset", type=int, default=0, help="with --state: jobs to skip")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def format_job(status: JobStatus) -> str:
    status = safe_copy(status)  # stored data may hold text a terminal cannot encode, or deep nesting
    held = " (held back by its key's limit)" if status.held else ""
    lines = [f"job        {shown_id(status.job_id)}", f"state      {status.state}{held}"]
    if status.queue is not None:
        lines.append(f"queue      {status.queue}")
    if status.function is not None:
        lines.append(f"function   {status.function}")
    if status.priority is not None:
        lines.append(f"priority   {status.priority}")
    if status.group is not None:
        lines.append(f"key        {status.group}")
    if status.state is not JobState.NOT_FOUND:
        lines.append(f"attempts   {status.attempts}")
    if status.progress is not None:
        message = f" {status.progress.message}" if status.progress.message else ""
        lines.append(f"progress   {status.progress.percent:g}%{message}")
    for label, value in (
        ("enqueued", status.enqueued_at),
        ("scheduled", status.scheduled_for),
        ("started", status.started_at),
        ("finished", status.finished_at),
    ):
        if value is not None:
            lines.append(f"{label:<10} {_when(value)}")
    if status.result is not None:
        lines.append(f"result     {json.dumps(status.result)}")
    if status.error is not None:
        lines.append(f"error      {status.error}")
    if status.note is not None:
        lines.append(f"note       {status.note}")
    return "\n".join(lines)


_WHEN: dict[ListState, tuple[str, Callable[[JobSummary], float | None]]] = {
    ListState.WAITING: ("READY SINCE", lambda j: j.scheduled_for),
    ListState.ACTIVE: ("READY SINCE", lambda j: j.scheduled_for),
    ListState.DELAYED: ("RUNS AT", lambda j: j.scheduled_for),
    ListState.COMPLETED: ("FINISHED", lambda j: j.finished_at),
    ListState.FAILED: ("FAILED", lambda j: j.finished_at),
}


def _details(job: JobSummary) -> str:
    if job.progress is not None:
        return f"{job.progress.percent:g}% {job.progress.message or ''}".rstrip()
    if job.error is not None:
        return job.error.split("\n", 1)[0]
    return job.note or ""


def format_jobs(page: JobList) -> str:
    """A page of jobs as a table, then one line with the total."""
    title, at = _WHEN[page.state]
    rows = [("JOB", "FUNCTION", "PRIORITY", "ATTEMPTS", title, "DETAILS")]
    for job in page.items:
        priority = "-" if job.priority is None else str(job.priority)
        rows.append(
            (shown_id(job.job_id), job.function or "-", priority, str(job.attempts), _when(at(job)), _details(job))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5] for row in rows]
    lines = [line.rstrip() for line in lines] if page.items else []
    first, last = page.offset + 1, page.offset + len(page.items)
    shown = f"{first}-{last} shown" if page.items else "none shown"
    held = f"; {page.held} more held back by their keys' limits" if page.held else ""
    lines.append(f"# {page.queue}: {page.total} {page.state}, {shown}{held}")
    return "\n".join(lines)


async def _list(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    if args.job_id is None:
        raise UsageError("--state needs a queue: arqscale status QUEUE --state " + args.state)
    spec = arq_spec(config, args.job_id)
    if not 1 <= args.limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be from 1 to {MAX_LIMIT}")
    if not 0 <= args.offset <= MAX_OFFSET:
        raise UsageError(f"--offset must be from 0 to {MAX_OFFSET}")
    page = await JobLister(redis).page(spec, ListState(args.state), args.offset, args.limit)
    print(page.model_dump_json() if args.json else format_jobs(page))
    return 0


async def _run(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    if args.state is not None:
        return await _list(args, config, redis)
    if args.job_id is not None:
        status = await JobStatusReader(redis, config.queues).read(job_id_argument(args.job_id, args.encoded))
        print(model_json(status) if args.json else format_job(status))
        return 1 if status.state is JobState.NOT_FOUND else 0
    # Every queue, BullMQ ones included (counted from BullMQ's own keys), in the configured order.
    counts = await CountsReader(redis).read(config.queues)
    workers = await live_workers(redis, config.queues)
    if args.json:
        print(json.dumps({"queues": [{**c.as_dict(), "workers": workers.get(q, 0)} for q, c in counts.items()]}))
    else:
        print(counts_table.render(counts.values(), workers))
    return 0


def run(args: argparse.Namespace) -> int:
    return run_with_redis("status", lambda config, redis: _run(args, config, redis))
