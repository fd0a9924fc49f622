"""``arqscale autoscale --queue NAME``: the HPA's algorithm over local worker processes (laptops, demos, tests)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

HELP = "run a queue's workers as local processes scaled by the chart's HPA, read from the External Metrics API"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", required=True, metavar="NAME", help="the queue whose workers to run and scale")
    parser.add_argument(
        "--hpa",
        metavar="FILE",
        help="the rendered HorizontalPodAutoscaler (YAML; `-` reads stdin; a whole `helm template` output works: "
        "the HPA selecting this queue is used); default: built from the queue's autoscaling hints and the "
        "chart's default behavior",
    )
    parser.add_argument(
        "--metrics-api",
        default="https://127.0.0.1:6443",
        metavar="URL",
        help="the exporter's External Metrics API (default https://127.0.0.1:6443, the exporter's default port)",
    )
    parser.add_argument("--namespace", default="default", help="namespace in the metrics request (default default)")
    parser.add_argument("--ca-file", type=Path, help="CA that signed the metrics API's serving certificate")
    parser.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        help="do not verify the serving certificate (the exporter's self-signed one), as an APIService's "
        "insecureSkipTLSVerify",
    )
    parser.add_argument(
        "--sync-period",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="seconds between reconciles (the controller's default, 15; shorter locally)",
    )
    parser.add_argument(
        "--scale-down-window",
        type=int,
        metavar="SECONDS",
        help="override behavior.scaleDown.stabilizationWindowSeconds (the chart's 300 s is long for a demo)",
    )
    parser.add_argument("--drain-timeout", type=float, metavar="SECONDS", help="passed to each worker")
    parser.add_argument("--log-dir", type=Path, default=None, help="worker logs (default .arqscale/autoscale)")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    from arqscale.autoscaler import hpa as hpa_mod
    from arqscale.autoscaler.metrics_client import MetricsApi, MetricsClient
    from arqscale.autoscaler.pool import WorkerPool
    from arqscale.autoscaler.runner import Autoscaler, describe
    from arqscale.core.config import load_config_or_exit

    config = load_config_or_exit()
    spec = config.queues.get(args.queue)
    if spec is None or spec.backend != "arq":
        print(f"arqscale autoscale: {args.queue!r} is not an arq queue of the queues file", file=sys.stderr)
        return 2
    if not args.sync_period > 0:
        print("arqscale autoscale: --sync-period must be above 0", file=sys.stderr)
        return 2
    try:
        if args.hpa:
            text = sys.stdin.read() if args.hpa == "-" else Path(args.hpa).read_text()
            hpa = hpa_mod.for_queue(yaml.safe_load_all(text), args.queue)
        else:
            hpa = hpa_mod.from_spec(spec)
    except (OSError, yaml.YAMLError, hpa_mod.HpaError, KeyError, TypeError) as exc:
        print(f"arqscale autoscale: {exc}", file=sys.stderr)
        return 2
    if args.scale_down_window is not None:
        down = dataclasses.replace(hpa.behavior.scale_down, stabilization_window_seconds=args.scale_down_window)
        hpa = dataclasses.replace(hpa, behavior=dataclasses.replace(hpa.behavior, scale_down=down))
    worker_args = [] if args.drain_timeout is None else ["--drain-timeout", f"{args.drain_timeout:g}"]
    pool = WorkerPool(args.queue, log_dir=args.log_dir or Path(".arqscale/autoscale"), worker_args=worker_args)
    api = MetricsApi(args.metrics_api, args.namespace, args.ca_file, args.insecure_skip_tls_verify)
    drain = args.drain_timeout if args.drain_timeout is not None else spec.effective_drain_timeout

    def say(text: str) -> None:
        print(text, flush=True)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        say(
            f"autoscaling {args.queue}: {hpa.min_replicas}..{hpa.max_replicas} workers on "
            f"{', '.join(m.name for m in hpa.metrics)}, every {args.sync_period:g}s from {args.metrics_api}"
        )
        async with MetricsClient(api) as client:
            scaler = Autoscaler(
                hpa,
                pool,
                client,
                args.sync_period,
                on_change=lambda c: say(describe(c)),
                on_problem=lambda t: say(f"{args.queue}: {t}"),
            )
            try:
                await scaler.run(stop)
            finally:
                say(f"{args.queue}: stopping, draining {len(pool.serving())} workers")
                killed = await pool.stop_all(drain + 10)
        return 1 if killed else 0

    return asyncio.run(main())
