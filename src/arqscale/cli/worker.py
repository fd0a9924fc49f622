"""``arqscale worker --queue NAME``: run one queue's jobs in this process (uvloop), with probes and metrics."""

from __future__ import annotations

import argparse
import sys

HELP = "run the worker of one queue: its jobs, /livez, /readyz and /metrics on one port"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", required=True, metavar="NAME", help="the queue to run (a key of the queues file)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="HTTP port for probes and metrics (ARQSCALE_WORKER_PORT; default 8080, or a free port when 8080 is taken)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="override the queue's drain timeout; jobs still running after it are put back for another worker",
    )


def run(args: argparse.Namespace) -> int:
    from arqscale.core.lazy_imports import defer

    defer("jwt")  # before redis is imported: see arqscale.core.lazy_imports (cold start)
    # redis-py imports cryptography only to note that it is installed (OCSP checks, which import it for real).
    defer("cryptography")
    from arqscale.core.config import load_config_or_exit

    config = load_config_or_exit(topology=False)  # checked beside the first pickup: see ``serve``
    spec = config.queues.get(args.queue)
    if spec is None or spec.backend != "arq":
        runnable = sorted(n for n, s in config.queues.items() if s.backend == "arq")
        why = "is a bullmq queue (counted, not run)" if spec is not None else "is not in the queues file"
        print(f"arqscale worker: queue {args.queue!r} {why}; runnable queues: {', '.join(runnable)}", file=sys.stderr)
        return 2
    if args.drain_timeout is not None and args.drain_timeout < 0:
        print("arqscale worker: --drain-timeout must be >= 0", file=sys.stderr)
        return 2

    from arqscale.worker.loop import WorkerSetupError, load_functions

    try:
        functions = load_functions(spec)
    except WorkerSetupError as exc:
        print(f"arqscale worker: {exc}", file=sys.stderr)
        return 2

    from arqscale.core import tracing

    try:
        traced = tracing.setup_from_env("arqscale-worker")
    except tracing.TracingSetupError as exc:
        print(f"arqscale worker: {exc}", file=sys.stderr)
        return 2

    import uvloop

    from arqscale.worker.process import serve

    port = config.settings.worker_port if args.port is None else args.port
    # A port nobody chose (the default) may move when taken, so a second worker of the same queue starts
    # on one machine; a port someone set must be that port or nothing.
    chosen = args.port is not None or "worker_port" in config.settings.model_fields_set
    return uvloop.run(
        serve(
            config,
            spec,
            functions,
            port=port,
            port_chosen=chosen,
            drain_timeout=args.drain_timeout,
            traced=traced,
            check_topology=True,
        )
    )
