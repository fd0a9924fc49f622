"""Dramatiq with the Redis broker as a benchmark peer: ``python -m peers.dramatiq_runner worker|fill URL ...``.

Configuration: ``RedisBroker`` with its defaults (messages fetched by a Lua script in batches of the prefetch,
acknowledged after processing, heartbeats every 60 s) and the ``Results`` middleware with a Redis backend,
results stored for every message and kept 3,600 s (as arqscale keeps results). The worker is Dramatiq's
``Worker(broker, worker_threads=C)`` in this process: Dramatiq's actors are plain functions run by a pool of
threads (``dramatiq --processes 1 --threads C`` runs the same, behind a supervising parent process); ``sleep`` is
``time.sleep(0.05)`` in a thread. Default middleware otherwise (age and time limits, retries: ``max_retries=0``
here, as a failure must show, not be retried). Log level WARNING.
Finished: a middleware's ``after_ack`` hook, after the result is stored and the message acknowledged.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from peers.common import QUEUE, SLEEP_S, Marks, batches, fill_result, parse_args

RESULT_TTL_MS = 3_600_000


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, name="dramatiq_runner")
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.action == "worker":
        worker(args)
    else:
        fill(args)


def build(url: str, marks: Marks | None) -> tuple[Any, dict[str, Any]]:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import Middleware
    from dramatiq.results import Results
    from dramatiq.results.backends.redis import RedisBackend

    class Finished(Middleware):
        def after_ack(self, broker: Any, message: Any) -> None:
            if marks is not None:
                marks.finished()

    broker = RedisBroker(url=url)
    broker.add_middleware(Results(backend=RedisBackend(url=url), store_results=True, result_ttl=RESULT_TTL_MS))
    broker.add_middleware(Finished())
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name="noop", queue_name=QUEUE, max_retries=0)
    def noop() -> None:
        if marks is not None:
            marks.started()

    @dramatiq.actor(actor_name="sleep", queue_name=QUEUE, max_retries=0)
    def sleep() -> None:
        if marks is not None:
            marks.started()
        time.sleep(SLEEP_S)

    return broker, {"noop": noop, "sleep": sleep}


def worker(args: Any) -> None:
    from dramatiq import Worker

    broker, _ = build(args.url, Marks(args.url, args.expect))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    w = Worker(broker, worker_threads=args.concurrency)
    w.start()
    stop.wait()
    w.stop()
    broker.close()


def fill(args: Any) -> None:
    broker, tasks = build(args.url, None)
    actor = tasks[args.task]
    started = time.perf_counter()
    for size in batches(args.n):
        for _ in range(size):
            actor.send()
    broker.close()
    print(fill_result(args.n, started))


if __name__ == "__main__":
    main()
