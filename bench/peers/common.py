"""What the peer runners share: their command line, the two benchmark tasks' shape, and the marks the harness reads.

Every runner takes the same arguments::

    python -m peers.NAME worker URL --concurrency C --expect N
    python -m peers.NAME fill   URL --n N --task noop|sleep

The tasks mirror ``bench/tasks.py``: ``noop`` does nothing, ``sleep`` waits ``SLEEP_S`` (``asyncio.sleep`` for
the asyncio peers, ``time.sleep`` in a thread for the thread-based ones). Both call ``Marks.started`` first.

The marks are the only Redis writes the benchmark adds to a peer's own work: one ``SET NX`` of ``bench:first``
per process (the first job's start, as ``tasks.noop`` does for arq and arqscale), and one ``SET`` of
``bench:done`` when the runner has seen ``--expect`` jobs finish. "Finish" is each peer's own hook that runs
after its result or acknowledgement is written (named in each runner), so a job counts once its peer considers
it done, as the harness's queue-empty check does for arq, arqscale and BullMQ Node.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from typing import Any

FIRST_KEY = "bench:first"
DONE_KEY = "bench:done"
QUEUE = "bench"
SLEEP_S = 0.05
TASKS = ("noop", "sleep")
FILL_BATCH = 500


def parse_args(argv: Sequence[str] | None = None, *, name: str = "peer") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m peers.{name}")
    parser.add_argument("action", choices=["worker", "fill"])
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=50, help="jobs run at once by the one worker process")
    parser.add_argument("--expect", type=int, default=0, help="write bench:done once this many jobs finished")
    parser.add_argument("--n", type=int, default=1000, help="jobs to enqueue (fill)")
    parser.add_argument("--task", choices=TASKS, default="noop", help="the task the filled jobs call")
    return parser.parse_args(argv)


class Marks:
    """The first job's start and the N-th job's finish, written to the benchmark's Redis (thread-safe)."""

    def __init__(self, url: str, expect: int) -> None:
        import redis  # every peer brings redis-py; imported here so that the module parses without it

        self._redis: Any = redis.Redis.from_url(url)
        self._expect = expect
        self._lock = threading.Lock()
        self._started = False
        self.finished_count = 0

    def started(self) -> None:
        if not self._started:
            self._started = True
            self._redis.set(FIRST_KEY, repr(time.time()), nx=True)

    def finished(self) -> None:
        with self._lock:
            self.finished_count += 1
            done = self.finished_count == self._expect
        if done:
            self._redis.set(DONE_KEY, repr(time.time()))


def fill_result(n: int, started: float) -> str:
    """The JSON line a fill prints (the harness reads the last line of stdout)."""
    return f'{{"jobs": {n}, "seconds": {time.perf_counter() - started:.3f}}}'


def batches(n: int, size: int = FILL_BATCH) -> list[int]:
    """Sizes of the batches that enqueue ``n`` jobs: ``size`` each, the rest in the last."""
    return [min(size, n - done) for done in range(0, n, size)]
