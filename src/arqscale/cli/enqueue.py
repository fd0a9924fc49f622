"""``arqscale enqueue QUEUE FUNCTION``: put one job on a queue."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError
from redis.asyncio import Redis

from arqscale.cli._common import UsageError, arq_spec, parse_json, run_with_redis
from arqscale.core.config import Config
from arqscale.core.job_status import JobStatusReader
from arqscale.core.models import JobRequest
from arqscale.core.producer import NotReplicated, Producer, UnknownFunctionError

HELP = "enqueue one job: arqscale enqueue QUEUE FUNCTION --args JSON --kwargs JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", metavar="QUEUE", help="queue name, e.g. email")
    parser.add_argument("function", metavar="FUNCTION", help="task name, e.g. send_email")
    parser.add_argument("--args", metavar="JSON", help="positional arguments as a JSON array")
    parser.add_argument("--kwargs", metavar="JSON", help="keyword arguments as a JSON object")
    parser.add_argument("--job-id", metavar="ID", help="idempotency key: the same id twice is one job")
    parser.add_argument("--defer", type=float, metavar="SECONDS", help="run no earlier than this many seconds from now")
    parser.add_argument("--priority", type=int, metavar="N", help="0 is the most urgent; default: the queue's normal")
    parser.add_argument(
        "--group", metavar="KEY", help="the job's key for the queue's per-key limits (user, tenant, account)"
    )
    parser.add_argument(
        "--callback-url", metavar="URL", help="send this job's events to URL as signed webhooks (webhooks.callbacks)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _request(args: argparse.Namespace) -> JobRequest:
    try:
        return JobRequest(
            function=args.function,
            args=parse_json("--args", args.args, list),
            kwargs=parse_json("--kwargs", args.kwargs, dict),
            job_id=args.job_id,
            defer_seconds=args.defer,
            priority=args.priority,
            group=args.group,
            callback_url=args.callback_url,
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        flags = {"defer_seconds": "--defer", "job_id": "--job-id", "group": "--group", "callback_url": "--callback-url"}
        field = flags.get(str(err["loc"][0]), str(err["loc"][0]))
        raise UsageError(f"{field}: {err['msg']}") from None


async def _enqueue(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    spec = arq_spec(config, args.queue)
    request = _request(args)
    try:
        try:
            [result] = await Producer.from_settings(redis, config.queues, config.redis).enqueue_many(
                spec.name, [request]
            )
        except NotReplicated as exc:  # enqueued, not confirmed durable: say so, exit 1 (the id is safe to reuse)
            print(exc.results[0].model_dump_json() if args.json else f"enqueued {exc.results[0].job_id}", flush=True)
            print(f"arqscale enqueue: {exc}", file=sys.stderr)
            return 1
        if not result.created:  # say what the existing job is doing, not what a new one would
            result.status = (await JobStatusReader(redis, config.queues).read(result.job_id)).state
    except UnknownFunctionError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # priority out of range, arguments the serializer cannot encode
        raise UsageError(str(exc)) from None
    if args.json:
        print(result.model_dump_json())
    elif result.created:
        print(f"enqueued {result.job_id} on {result.queue} ({result.status})")
    else:
        print(f"{result.job_id} already exists on {result.queue} ({result.status}): not enqueued again")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_with_redis("enqueue", lambda config, redis: _enqueue(args, config, redis))
