"""Celery with the Redis broker as a benchmark peer: ``python -m peers.celery_runner worker|fill URL ...``.

Configuration: Redis broker and Redis result backend **on** (results kept 3,600 s, ``result_expires``), as
arqscale keeps each job's result an hour. Worker: ``celery worker --pool threads --concurrency C`` run in this
process (``app.worker_main``), so one process holds C threads: Celery's tasks are plain functions, and threads
are its natural single-process concurrency model for I/O (the default prefork pool would be C processes; gevent
and eventlet need monkey-patching). ``sleep`` is ``time.sleep(0.05)`` in a thread. ``--without-gossip
--without-mingle --without-heartbeat``: Celery's worker-to-worker chatter over the broker, the settings its
docs and most deployments on Redis use. Prefetch and acknowledgement as shipped (``worker_prefetch_multiplier``
4, ``acks_late`` off: a message is acknowledged when received). Log level WARNING (no per-task line).
Finished: the ``task_postrun`` signal, sent after the result is stored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from peers.common import QUEUE, SLEEP_S, Marks, batches, fill_result, parse_args

RESULT_TTL_S = 3600


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, name="celery_runner")
    if args.action == "worker":
        worker(args)
    else:
        fill(args)


def build(url: str, marks: Marks | None) -> tuple[Any, dict[str, Any]]:
    from celery import Celery
    from celery.signals import task_postrun

    app = Celery("bench", broker=url, backend=url)
    app.conf.update(
        task_default_queue=QUEUE,
        result_expires=RESULT_TTL_S,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="noop")
    def noop() -> None:
        if marks is not None:
            marks.started()

    @app.task(name="sleep")
    def sleep() -> None:
        if marks is not None:
            marks.started()
        time.sleep(SLEEP_S)

    if marks is not None:
        task_postrun.connect(lambda **_: marks.finished(), weak=False)
    return app, {"noop": noop, "sleep": sleep}


def worker(args: Any) -> None:
    app, _ = build(args.url, Marks(args.url, args.expect))
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={args.concurrency}",
            f"--queues={QUEUE}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def fill(args: Any) -> None:
    app, tasks = build(args.url, None)
    task = tasks[args.task]
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for size in batches(args.n):
            for _ in range(size):
                task.apply_async(producer=producer)
    print(fill_result(args.n, started))


if __name__ == "__main__":
    main()
