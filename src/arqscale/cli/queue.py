"""``arqscale queue pause|resume|migrate NAME``: stop and restart job pickup; rescue stranded jobs."""

from __future__ import annotations

import argparse

from redis.asyncio import Redis

from arqscale.cli._common import arq_spec, run_with_redis
from arqscale.core import queue_control
from arqscale.core.config import Config

HELP = "pause or resume a queue, or move jobs stranded by changed priority settings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("pause", "stop workers taking jobs from NAME (it still accepts new jobs)"),
        ("resume", "let workers take jobs again"),
        ("migrate", "move jobs outside the configured priority bands into the nearest one"),
    ):
        sub = actions.add_parser(name, help=text, description=text)
        sub.add_argument("name", metavar="NAME", help="queue name")


async def _run(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    spec = arq_spec(config, args.name)
    if args.action == "migrate":
        moved = await queue_control.migrate(redis, spec)
        print(f"queue {spec.name}: moved {moved} stranded job(s) into its priority bands")
        return 0
    if args.action == "pause":
        changed = await queue_control.pause(redis, spec)
        print(f"queue {spec.name} paused" if changed else f"queue {spec.name} was already paused")
    else:
        changed = await queue_control.resume(redis, spec)
        print(f"queue {spec.name} resumed" if changed else f"queue {spec.name} was not paused")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_with_redis("queue", lambda config, redis: _run(args, config, redis))
