"""``arqscale dlq list|show|requeue|purge``: the dead-letter store of each queue."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from redis.asyncio import Redis

from arqscale.cli._common import ENCODED_HELP, UsageError, arq_spec, fail, job_id_argument, run_with_redis, shown_id
from arqscale.core.config import Config
from arqscale.core.dead_letters import DeadLetters, RequeueOutcome
from arqscale.core.models import DeadJob

HELP = "list, show, requeue (same id, tries reset) or purge dead-lettered jobs"

_WHY = {
    RequeueOutcome.NOT_FOUND: "no such entry",
    RequeueOutcome.CONFLICT: "a live job already holds this id",
    RequeueOutcome.NO_PAYLOAD: "the entry kept no payload",
    RequeueOutcome.RACED: "the entry changed meanwhile; try again",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="entries, newest first", description="List entries, newest first.")
    p.add_argument("queue", metavar="QUEUE", nargs="?", help="one queue (default: every queue)")
    p.add_argument("--limit", type=int, default=50, help="at most this many per queue (default 50)")
    p.add_argument("--offset", type=int, default=0, help="skip this many (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON lines, one entry each")

    p = actions.add_parser("show", help="one entry with its traceback", description="Show one entry in full.")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--encoded", action="store_true", help=ENCODED_HELP)
    p.add_argument("--json", action="store_true", help="print the entry as JSON")

    p = actions.add_parser(
        "requeue",
        help="run entries again under the same id",
        description="Put entries back on their queue: same id, original payload, try counter reset.",
    )
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("job_ids", metavar="JOB_ID", nargs="*")
    p.add_argument("--all", action="store_true", help="requeue every entry of the queue")
    p.add_argument("--encoded", action="store_true", help=ENCODED_HELP)

    p = actions.add_parser("purge", help="delete entries", description="Delete entries for good.")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("job_ids", metavar="JOB_ID", nargs="*")
    p.add_argument("--all", action="store_true", help="delete every entry of the queue")
    p.add_argument("--encoded", action="store_true", help=ENCODED_HELP)
    p.add_argument("--older-than", type=float, metavar="SECONDS", help="delete entries that failed before that")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_line(entry: DeadJob) -> str:
    error = entry.error.splitlines()[0] if entry.error else ""
    function = entry.function or "?"
    job_id = shown_id(entry.job_id)
    return f"{entry.queue}  {job_id}  {function}  tries={entry.attempts}  {_when(entry.failed_at)}  {error}"


def _full(entry: DeadJob) -> str:
    lines = [
        f"job        {shown_id(entry.job_id)}",
        f"queue      {entry.queue}",
        f"function   {entry.function or '?'}",
        f"attempts   {entry.attempts}",
        f"enqueued   {_when(entry.enqueued_at)}",
        f"failed     {_when(entry.failed_at)}",
        f"priority   {'-' if entry.priority is None else entry.priority}",
        f"args       {json.dumps(entry.args)}",
        f"kwargs     {json.dumps(entry.kwargs)}",
        f"error      {entry.error}",
    ]
    if entry.traceback:
        lines += ["traceback", *("  " + line for line in entry.traceback.rstrip().splitlines())]
    return "\n".join(lines)


async def _list(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    if args.limit < 1 or args.offset < 0:
        raise UsageError("--limit must be at least 1 and --offset at least 0")
    names = [arq_spec(config, args.queue).name] if args.queue else sorted(config.queues)
    for name in names:
        spec = config.queues[name]
        if spec.backend != "arq":
            continue
        page = await DeadLetters(redis, spec).page(args.offset, args.limit)
        for entry in page.items:
            print(entry.model_dump_json(exclude={"payload_b64"}) if args.json else _one_line(entry))
        if not args.json:
            shown = len(page.items)
            print(f"# {name}: {page.total} dead-letter entr{'y' if page.total == 1 else 'ies'}, {shown} shown")
    return 0


async def _show(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    spec = arq_spec(config, args.queue)
    job_id = job_id_argument(args.job_id, args.encoded)
    entry = await DeadLetters(redis, spec).get(job_id)
    if entry is None:
        return fail("dlq", f"no dead-letter entry {shown_id(job_id)!r} in queue {spec.name!r}", 1)
    print(entry.model_dump_json() if args.json else _full(entry))
    return 0


def _targets(args: argparse.Namespace, verb: str) -> list[str] | None:
    """The ids to act on, or None for every entry; refuses to guess when neither is given."""
    if args.all and args.job_ids:
        raise UsageError(f"{verb}: give job ids or --all, not both")
    if not args.all and not args.job_ids and getattr(args, "older_than", None) is None:
        raise UsageError(f"{verb}: give one or more job ids, or --all")
    return None if args.all else [job_id_argument(raw, args.encoded) for raw in args.job_ids]


async def _requeue(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    spec = arq_spec(config, args.queue)
    summary = await DeadLetters(redis, spec).requeue_many(_targets(args, "requeue"))
    for job_id in summary.requeued:
        print(f"requeued {shown_id(job_id)} on {spec.name}")
    for job_id, outcome in summary.skipped.items():
        print(f"skipped {shown_id(job_id)}: {_WHY[outcome]}")
    if not summary.requeued and not summary.skipped:
        print(f"queue {spec.name} has no dead-letter entries")
    return 1 if summary.skipped else 0


async def _purge(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    spec = arq_spec(config, args.queue)
    if args.older_than is not None and (args.job_ids or args.all):
        raise UsageError("purge: --older-than cannot be combined with job ids or --all")
    if args.older_than is not None and not args.older_than >= 0:
        raise UsageError("purge: --older-than must be a number of seconds >= 0")
    targets = None if args.older_than is not None else _targets(args, "purge")
    purged = await DeadLetters(redis, spec).purge(targets, older_than_seconds=args.older_than)
    print(f"purged {purged} dead-letter entr{'y' if purged == 1 else 'ies'} from {spec.name}")
    return 1 if targets and purged < len(set(targets)) else 0


_ACTIONS = {"list": _list, "show": _show, "requeue": _requeue, "purge": _purge}


def run(args: argparse.Namespace) -> int:
    action = _ACTIONS[args.action]
    return run_with_redis("dlq", lambda config, redis: action(args, config, redis))
