"""``arqscale api``: serve the HTTP API until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio

from arqscale.config import load_config_or_exit

HELP = "Serve the HTTP API: enqueue jobs, job status, queue counts, pause/resume, dead letters."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: ARQSCALE_API_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to bind (default: ARQSCALE_API_PORT, 8000)")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_exit()
    from arqscale.api import serve

    asyncio.run(serve(config, host=args.host, port=args.port))
    return 0
