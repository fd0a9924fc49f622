"""BullMQ for Python (PyPI ``bullmq``) as a benchmark peer: ``python -m peers.bullmq_py_runner worker|fill URL ...``.

Configuration: ``Worker("bench", processor, {"connection": URL, "concurrency": C})`` with BullMQ's defaults
otherwise (lock 30 s renewed every 15 s, stalled-job check every 30 s; completed jobs kept, as BullMQ Node in
the harness and like arqscale's results). The same Lua scripts and key layout as BullMQ Node. uvloop.
Finished: the worker's ``completed`` event, emitted after ``moveToFinished`` has run.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

from peers.common import QUEUE, SLEEP_S, Marks, batches, fill_result, parse_args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, name="bullmq_py_runner")
    import uvloop

    logging.basicConfig(level=logging.WARNING)
    uvloop.run(worker(args) if args.action == "worker" else fill(args))


async def worker(args: Any) -> None:
    from bullmq import Worker

    marks = Marks(args.url, args.expect)

    async def process(job: Any, token: str) -> None:
        marks.started()
        if job.name == "sleep":
            await asyncio.sleep(SLEEP_S)

    w = Worker(QUEUE, process, {"connection": args.url, "concurrency": args.concurrency})
    w.on("completed", lambda job, result: marks.finished())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await w.close()


async def fill(args: Any) -> None:
    from bullmq import Queue

    queue = Queue(QUEUE, {"connection": args.url})
    started = time.perf_counter()
    for size in batches(args.n):
        await queue.addBulk([{"name": args.task, "data": {}} for _ in range(size)])
    await queue.close()
    print(fill_result(args.n, started))


if __name__ == "__main__":
    main()
