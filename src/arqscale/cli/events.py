"""``arqscale events QUEUE [--job ID]``: tail a queue's job events (or one job's), as lines or JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from redis.asyncio import Redis

from arqscale.cli._common import ENCODED_HELP, UsageError, arq_spec, job_id_argument, run_with_redis, shown_id
from arqscale.core import event_stream
from arqscale.core.config import Config
from arqscale.core.events import Event, is_stream_id

HELP = "tail a queue's job events (waiting, active, completed, failed, ...), or one job's with --job"

# Printed after the event name, in this order, when the event has them.
_DETAILS = ("job_try", "worker", "func", "delay_ms", "duration_ms", "reason", "progress", "message", "error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", metavar="QUEUE", help="the queue")
    parser.add_argument("--job", metavar="ID", help="only this job's events (from its first kept one)")
    parser.add_argument("--encoded", action="store_true", help=ENCODED_HELP)
    parser.add_argument("--after", metavar="STREAM_ID", help="start after this event id (0-0: every kept event)")
    parser.add_argument("--from-start", action="store_true", help="start with the oldest kept event")
    parser.add_argument("--no-follow", action="store_true", help="print the kept events and exit")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def line(event: Event) -> str:
    at = datetime.fromtimestamp(event.at_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    parts = [event.id, at, f"{event.event:<9}", shown_id(event.job)]
    for name in _DETAILS:
        value = getattr(event, name)
        if value is not None:
            key = "try" if name == "job_try" else name
            text = str(value)
            parts.append(f"{key}={text if text.isprintable() else json.dumps(text)}")
    return "  ".join(parts)


def _print(event: Event, as_json: bool) -> None:
    print(json.dumps(event.as_dict(), ensure_ascii=False, default=str) if as_json else line(event), flush=True)


async def _tail(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    spec = arq_spec(config, args.queue)
    job = job_id_argument(args.job, args.encoded) if args.job is not None else None
    after: str | None = args.after
    if after is not None and not is_stream_id(after):
        raise UsageError(f"--after: {after!r} is not an event id (<ms>-<seq>, e.g. 1733312345678-0)")
    if after is None and (args.from_start or job is not None or args.no_follow):
        after = "0-0"
    if not spec.events.enabled:
        print(f"arqscale events: queue {spec.name!r} records no events (events.enabled: false)", file=sys.stderr)
    if after is not None and after != "0-0" and await event_stream.trimmed_after(redis, spec.name, after):
        print(f"arqscale events: events after {after} were trimmed (the stream keeps the newest ones)", file=sys.stderr)
    if args.no_follow:
        start = after or "0-0"
        while True:
            page = await event_stream.history(redis, spec.name, after=start, job=job, limit=1000)
            for event in page:
                _print(event, args.json)
            if len(page) < 1000:
                return 0
            start = page[-1].id
    async for event in event_stream.Events(redis, spec.name, after=after, job=job):
        _print(event, args.json)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return run_with_redis("events", lambda config, redis: _tail(args, config, redis))
    except KeyboardInterrupt:
        return 130
