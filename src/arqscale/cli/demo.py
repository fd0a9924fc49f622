"""``arqscale demo``: Redis, the API, the exporter and one worker per demo queue, on this machine."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from pydantic import ValidationError

HELP = "run the whole stack locally with the demo queues and watch a burst of jobs drain"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=200, metavar="N", help="demo jobs to enqueue (default 200)")
    parser.add_argument(
        "--until-drained", action="store_true", help="stop once every queue is empty (for scripts and CI)"
    )
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    parser.add_argument("--api-port", type=int, default=8000, help="API port if free (default 8000)")
    parser.add_argument("--exporter-port", type=int, default=9100, help="exporter port if free (default 9100)")
    parser.add_argument(
        "--autoscale",
        action="store_true",
        help="scale each queue's workers with `arqscale autoscale` (its chart HPA, a 2 s sync, a 20 s scale-down "
        "window) instead of one worker per queue: watch a burst bring workers up and the drain take them down",
    )
    parser.add_argument(
        "--demo-dir",
        type=Path,
        default=None,
        help="where outbox/, exports/, images/, logs/ and the private Redis live (ARQSCALE_DEMO_DIR, ./.arqscale/demo)",
    )


def run(args: argparse.Namespace) -> int:
    if args.jobs < 0:
        print("arqscale demo: --jobs must be 0 or more", file=sys.stderr)
        return 2
    if args.duration is not None and not args.duration > 0:
        print("arqscale demo: --duration must be above 0 seconds", file=sys.stderr)
        return 2
    from arqscale.core.logs import setup_logging
    from arqscale.core.settings import RedisSettings
    from arqscale.core.spec import demo_queues
    from arqscale.demo.stack import LocalStack, Options, StackError, summary

    try:
        RedisSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False, include_input=False)
        )
        print(f"arqscale demo: invalid Redis settings: {problems}", file=sys.stderr)
        return 2
    setup_logging("WARNING")
    demo_dir = args.demo_dir or Path(os.environ.get("ARQSCALE_DEMO_DIR", ".arqscale/demo"))
    options = Options(
        jobs=args.jobs,
        until_drained=args.until_drained,
        duration=args.duration,
        api_port=args.api_port,
        exporter_port=args.exporter_port,
        demo_dir=demo_dir,
        autoscale=args.autoscale,
    )
    stack = LocalStack(demo_queues(), options)
    try:
        outcome = asyncio.run(stack.run())
    except StackError as exc:
        print(f"arqscale demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the stack installed its own handler: nothing started yet
        return 130
    print(summary(outcome))
    for problem in outcome.problems:
        print(f"arqscale demo: {problem}", file=sys.stderr)
    if outcome.lost or outcome.problems:
        return 1
    if args.until_drained and not outcome.drained:
        print("arqscale demo: stopped before every queue drained", file=sys.stderr)
        return 1
    return 0
