"""``arqscale status [JOB_ID]``: counts per queue as a table (or JSON), or one job's status."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from redis.asyncio import Redis

from arqscale import counts_table
from arqscale.commands._common import run_with_redis
from arqscale.config import Config
from arqscale.counts import CountsReader
from arqscale.job_status import JobStatusReader
from arqscale.live_workers import live_workers
from arqscale.models import JobState, JobStatus

HELP = "Show counts per queue (waiting, active, delayed, paused, completed, failed), or one job's status."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", nargs="?", help="show this job instead of the queue table")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def format_job(status: JobStatus) -> str:
    lines = [f"job        {status.job_id}", f"state      {status.state}"]
    if status.queue is not None:
        lines.append(f"queue      {status.queue}")
    if status.function is not None:
        lines.append(f"function   {status.function}")
    if status.priority is not None:
        lines.append(f"priority   {status.priority}")
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


async def _run(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    if args.job_id is not None:
        status = await JobStatusReader(redis, config.queues).read(args.job_id)
        print(status.model_dump_json() if args.json else format_job(status))
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
