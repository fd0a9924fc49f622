"""Run a plain arq 0.28 worker on the benchmark queue: ``python bench/arq_worker.py URL default|tuned [MAX_JOBS]``.

``default`` is arq exactly as shipped (max_jobs=10, poll_delay=0.5 s, asyncio's own loop); ``tuned`` is
the best plain arq we know (max_jobs=100, poll_delay=0.01 s, uvloop). arq's per-job INFO log lines are
switched off in both, which favours arq: its CLI would log two lines per job. ``MAX_JOBS`` overrides the
mode's ``max_jobs`` (the I/O-bound load runs every system at concurrency 500).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker

from tasks import noop, sleep, stamp

QUEUE_KEY = "arq:queue:bench"


def worker_kwargs(mode: str) -> dict[str, Any]:
    if mode == "default":
        return {}
    if mode == "tuned":
        return {"max_jobs": 100, "poll_delay": 0.01}
    raise SystemExit(f"unknown mode {mode!r}: use default or tuned")


def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    kwargs = worker_kwargs(mode)
    if len(sys.argv) > 3:
        kwargs["max_jobs"] = int(sys.argv[3])
    logging.basicConfig(level=logging.WARNING)
    if mode == "tuned":
        import uvloop

        asyncio.set_event_loop(uvloop.new_event_loop())
    else:
        asyncio.set_event_loop(asyncio.new_event_loop())
    worker = Worker(
        functions=[noop, stamp, sleep],
        queue_name=QUEUE_KEY,
        redis_settings=RedisSettings.from_dsn(url),
        **kwargs,
    )
    worker.run()


if __name__ == "__main__":
    main()
