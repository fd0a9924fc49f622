"""SAQ (Redis queue) as a benchmark peer: ``python -m peers.saq_runner worker|fill URL ...`` (see ``common``).

Configuration: ``Worker(queue, functions, concurrency=C)`` with SAQ's defaults otherwise (one ``BLMOVE``
per free slot, so a worker holds C blocked connections; job defaults: ``timeout`` 10 s, ``retries`` 1,
``ttl`` 600 s, i.e. the finished job and its result are kept ten minutes, as arqscale keeps results). The
queue's Redis pool is sized ``C + 20``: redis-py's async pool stops at 100 connections, fewer than the C
blocking ``BLMOVE`` calls at concurrency 500 (the worker then fails with "Too many connections").
uvloop, as arqscale's worker runs on it; SAQ's per-job INFO log line off (WARNING), as arq's is in the harness.
Finished: SAQ's ``after_process`` hook, which runs after ``job.finish`` has written the job's result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from peers.common import QUEUE, SLEEP_S, Marks, batches, fill_result, parse_args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, name="saq_runner")
    import uvloop

    logging.basicConfig(level=logging.WARNING)
    uvloop.run(worker(args) if args.action == "worker" else fill(args))


async def worker(args: Any) -> None:
    from redis.asyncio import Redis
    from saq import Worker
    from saq.job import Status
    from saq.queue.redis import RedisQueue

    marks = Marks(args.url, args.expect)

    async def noop(ctx: dict[str, Any]) -> None:
        marks.started()

    async def sleep(ctx: dict[str, Any]) -> None:
        marks.started()
        await asyncio.sleep(SLEEP_S)

    async def after_process(ctx: dict[str, Any]) -> None:
        if ctx["job"].status == Status.COMPLETE:  # it also runs for failed jobs, which must stall the run
            marks.finished()

    queue = RedisQueue(Redis.from_url(args.url, max_connections=args.concurrency + 20), name=QUEUE)
    # SAQ names a function by its __qualname__ unless given a name.
    functions = [("noop", noop), ("sleep", sleep)]
    w = Worker(queue, functions=functions, concurrency=args.concurrency, after_process=after_process)
    await w.start()  # until SIGTERM (SAQ installs its own handler)


async def fill(args: Any) -> None:
    from saq import Queue

    queue = Queue.from_url(args.url, name=QUEUE)
    started = time.perf_counter()
    for size in batches(args.n):
        await asyncio.gather(*(queue.enqueue(args.task) for _ in range(size)))
    await queue.disconnect()
    print(fill_result(args.n, started))


if __name__ == "__main__":
    main()
