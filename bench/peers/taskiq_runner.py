"""taskiq with taskiq-redis as a benchmark peer: ``python -m peers.taskiq_runner worker|fill URL ...``.

Configuration: ``RedisStreamBroker`` (a Redis stream read by a consumer group, with acknowledgements: the broker
taskiq-redis recommends for delivery that survives a lost worker; ``ListQueueBroker`` is a bare list with no
acks) with its defaults (``XREADGROUP`` of up to 100 messages, 2 s block), results in ``RedisAsyncResultBackend``
kept 3,600 s (as arqscale's), acknowledged when the result is saved (taskiq's default). The worker is taskiq's
own ``Receiver`` with ``max_async_tasks=C``, run in this process on uvloop as ``taskiq worker`` runs it in each
of its child processes (the CLI forks; here one process is measured). Per-task INFO log line off (WARNING).
Finished: a middleware's ``post_save`` hook, after the result is written (the acknowledgement follows).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

from peers.common import QUEUE, SLEEP_S, Marks, batches, fill_result, parse_args

RESULT_TTL_S = 3600


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, name="taskiq_runner")
    import uvloop

    logging.basicConfig(level=logging.WARNING)
    uvloop.run(worker(args) if args.action == "worker" else fill(args))


def build(url: str, marks: Marks | None, *, worker: bool) -> tuple[Any, dict[str, Any]]:
    from taskiq import TaskiqMiddleware
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

    class Finished(TaskiqMiddleware):
        def post_save(self, message: Any, result: Any) -> None:
            if marks is not None:
                marks.finished()

    # consumer_id "0": the group reads the stream from its start, so jobs filled before the worker's start count.
    broker = RedisStreamBroker(url, queue_name=QUEUE, consumer_id="0").with_result_backend(
        RedisAsyncResultBackend(url, result_ex_time=RESULT_TTL_S)
    )
    broker.add_middlewares(Finished())
    broker.is_worker_process = worker  # before the tasks are declared, as the taskiq CLI does

    @broker.task(task_name="noop")
    async def noop() -> None:
        if marks is not None:
            marks.started()

    @broker.task(task_name="sleep")
    async def sleep() -> None:
        if marks is not None:
            marks.started()
        await asyncio.sleep(SLEEP_S)

    return broker, {"noop": noop, "sleep": sleep}


async def worker(args: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from taskiq.receiver import Receiver

    broker, _ = build(args.url, Marks(args.url, args.expect), worker=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.startup()
    with ThreadPoolExecutor() as pool:
        receiver = Receiver(broker, executor=pool, max_async_tasks=args.concurrency)
        await receiver.listen(stop)
    await broker.shutdown()


async def fill(args: Any) -> None:
    broker, tasks = build(args.url, None, worker=False)
    await broker.startup()
    task = tasks[args.task]
    started = time.perf_counter()
    for size in batches(args.n):
        await asyncio.gather(*(task.kiq() for _ in range(size)))
    await broker.shutdown()
    print(fill_result(args.n, started))


if __name__ == "__main__":
    main()
