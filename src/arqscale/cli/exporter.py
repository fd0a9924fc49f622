"""``arqscale exporter``: queue counts for Prometheus, the HPA (External Metrics API) and KEDA."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

HELP = "serve queue counts: /metrics, the External Metrics API (HTTPS) and a KEDA endpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="HTTP port for /metrics and /keda (ARQSCALE_EXPORTER_PORT)")
    parser.add_argument("--api-port", type=int, help="HTTPS port of the metrics API (ARQSCALE_METRICS_API_PORT)")
    parser.add_argument(
        "--no-metrics-api", action="store_true", help="serve no External Metrics API (ARQSCALE_METRICS_API_ENABLED)"
    )
    parser.add_argument("--refresh", type=float, help="seconds between counts (ARQSCALE_EXPORTER_REFRESH_SECONDS)")


def run(args: argparse.Namespace) -> int:
    # Imports here so `arqscale --help` stays fast and other commands do not load aiohttp.
    from arqscale.core.config import load_config_or_exit
    from arqscale.core.connection import create_redis
    from arqscale.exporter.server import ExporterOptions, serve
    from arqscale.exporter.tls_certs import TLSConfigError

    config = load_config_or_exit()
    s = config.settings
    options = ExporterOptions(
        host=s.exporter_host,
        port=args.port if args.port is not None else s.exporter_port,
        refresh_seconds=args.refresh if args.refresh is not None else s.exporter_refresh_seconds,
        api_enabled=s.metrics_api_enabled and not args.no_metrics_api,
        api_port=args.api_port if args.api_port is not None else s.metrics_api_port,
        cert_file=s.metrics_api_cert_file,
        key_file=s.metrics_api_key_file,
        client_ca_file=s.metrics_api_client_ca_file,
        allowed_names=s.metrics_api_allowed_names,
        namespaces=frozenset(n.strip() for n in s.metrics_api_namespaces.split(",") if n.strip()) or None,
        tls_reload_seconds=s.metrics_api_tls_reload_seconds,
    )
    if options.refresh_seconds <= 0:
        print("arqscale: --refresh must be above 0", file=sys.stderr)
        return 2
    redis = create_redis(config.redis)
    try:
        _run_loop(serve(redis, config.queues, options))
    except TLSConfigError as exc:
        print(f"arqscale: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"arqscale: cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable without it
        asyncio.run(main)
        return
    uvloop.run(main)
