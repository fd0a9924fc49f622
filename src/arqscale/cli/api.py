"""``arqscale api``: serve the HTTP API until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import sys

from arqscale.core.config import load_config_or_exit

HELP = "serve the HTTP API: enqueue, job status, counts, pause/resume, dead letters, dashboard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: ARQSCALE_API_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to bind (default: ARQSCALE_API_PORT, 8000)")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_exit()
    from arqscale.api.app import serve
    from arqscale.cli._common import UsageError, check_redis_url, fail

    try:
        check_redis_url(config)
    except UsageError as exc:
        return fail("api", str(exc))

    from arqscale.core import tracing

    try:
        traced = tracing.setup_from_env("arqscale-api")
    except tracing.TracingSetupError as exc:
        return fail("api", str(exc))

    import uvloop

    try:
        uvloop.run(serve(config, host=args.host, port=args.port, traced=traced))
    except OSError as exc:  # the port is taken or the address cannot be bound
        print(f"arqscale api: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
