"""``arqscale schedule list|show|add|pause|resume|remove``: a queue's schedules, declared or made at run time."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from pydantic import ValidationError
from redis.asyncio import Redis

from arqscale.cli._common import UsageError, arq_spec, parse_json, run_with_redis
from arqscale.core.config import Config
from arqscale.core.producer import UnknownFunctionError
from arqscale.core.schedule_spec import Schedule
from arqscale.core.schedules import (
    DeclaredScheduleError,
    ScheduleConflictError,
    ScheduleNotFoundError,
    ScheduleStore,
    ScheduleView,
)

HELP = "list, add, pause, resume or remove a queue's schedules (cron or interval jobs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="schedules with next run and last job", description="List a queue's schedules.")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--json", action="store_true", help="print JSON lines, one schedule each (the API's shape)")

    p = actions.add_parser("show", help="one schedule as JSON", description="Show one schedule as JSON.")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("name", metavar="NAME")

    p = actions.add_parser(
        "add",
        help="create or replace a runtime schedule",
        description="Create or replace a runtime schedule; a changed one starts at its first tick after now.",
    )
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("name", metavar="NAME")
    p.add_argument("function", metavar="FUNCTION", help="task name, as enqueued")
    timing = p.add_mutually_exclusive_group(required=True)
    timing.add_argument("--cron", help="cron expression, 5 fields or 6 with seconds first")
    timing.add_argument("--every", type=float, metavar="SECONDS", help="fixed interval instead of cron")
    p.add_argument("--timezone", default="UTC", help="IANA time zone of the cron expression (default UTC)")
    p.add_argument("--args", help="positional arguments as a JSON array")
    p.add_argument("--kwargs", help="keyword arguments as a JSON object")
    p.add_argument("--priority", type=int, help="0 is the most urgent (default: the queue's)")
    p.add_argument("--jitter", type=float, default=0, metavar="SECONDS", help="each job waits a random 0..SECONDS")
    p.add_argument(
        "--missed", choices=["skip", "run_once"], default="skip", help="ticks later than --grace: skip or run once"
    )
    p.add_argument("--grace", type=float, default=60, metavar="SECONDS", help="a tick this late still runs")

    for name, text in (
        ("pause", "stop a schedule's ticks"),
        ("resume", "tick again from the first tick after now"),
        ("remove", "delete a runtime schedule"),
    ):
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument("queue", metavar="QUEUE")
        p.add_argument("name", metavar="NAME")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _timing(view: ScheduleView) -> str:
    s = view.schedule
    if s is None:
        return f"unusable: {view.problem}"
    if s.cron is not None:
        return f"cron {s.cron!r} {s.timezone}"
    return f"every {s.every:g}s"


def _print_table(views: list[ScheduleView]) -> None:
    rows = [("NAME", "ORIGIN", "STATE", "TIMING", "FUNCTION", "NEXT RUN", "LAST JOB")]
    for v in views:
        state = "paused" if v.paused else ("active" if v.next_run_at is not None else "done")
        last = "-" if v.last_job is None else f"{v.last_job.job_id} ({_when(v.last_job.tick_at)})"
        function = v.schedule.function if v.schedule else "-"
        rows.append((v.name, v.origin, state, _timing(v), function, _when(v.next_run_at), last))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])


def _schedule(args: argparse.Namespace) -> Schedule:
    try:
        return Schedule(
            name=args.name,
            function=args.function,
            cron=args.cron,
            every=args.every,
            timezone=args.timezone,
            args=parse_json("--args", args.args, list),
            kwargs=parse_json("--kwargs", args.kwargs, dict),
            priority=args.priority,
            jitter=args.jitter,
            missed=args.missed,
            grace=args.grace,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'schedule'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise UsageError(problems) from None


async def _run(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    store = ScheduleStore(redis, arq_spec(config, args.queue))
    try:
        return await _act(args, store)
    except (ScheduleNotFoundError, DeclaredScheduleError, ScheduleConflictError, UnknownFunctionError) as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # a priority the queue does not have
        raise UsageError(str(exc)) from None


async def _act(args: argparse.Namespace, store: ScheduleStore) -> int:
    queue = store.spec.name
    if args.action == "list":
        views = await store.views()
        if args.json:
            for view in views:
                print(view.model_dump_json())
        elif views:
            _print_table(views)
        else:
            print(f"queue {queue} has no schedules")
        return 0
    if args.action == "show":
        print(json.dumps((await store.get(args.name)).model_dump(mode="json"), indent=2))
        return 0
    if args.action == "add":
        outcome = await store.put(_schedule(args))
        view = await store.get(args.name)
        print(f"schedule {args.name} of queue {queue} {outcome}; next run {_when(view.next_run_at)}")
        return 0
    if args.action == "remove":
        if not await store.remove(args.name):
            raise ScheduleNotFoundError(queue, args.name)
        print(f"schedule {args.name} of queue {queue} removed")
        return 0
    if args.action == "pause":
        changed = await store.pause(args.name)
        print(f"schedule {args.name} paused" if changed else f"schedule {args.name} was already paused")
        return 0
    changed = await store.resume(args.name)
    view = await store.get(args.name)
    print(
        f"schedule {args.name} resumed; next run {_when(view.next_run_at)}"
        if changed
        else f"schedule {args.name} was not paused"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    return run_with_redis("schedule", lambda config, redis: _run(args, config, redis))
