"""Make BullMQ jobs in every state with the real BullMQ (PyPI port), then hold them until told to stop.

Run as ``python tests/bullmq_world.py REDIS_URL``: prints one JSON line with BullMQ's own
``getJobCounts`` per queue once everything is in place, keeps one job running until a line arrives on
stdin, then closes. A separate process keeps BullMQ's unclosed connections out of the test process,
whose warnings are errors.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bullmq import FlowProducer, Queue, Worker

TYPES = ["waiting", "paused", "active", "delayed", "prioritized", "completed", "failed", "waiting-children"]


async def wait_for(queue: Queue, states: tuple[str, ...], want: int, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while True:
        counts = await queue.getJobCounts(*states)
        if sum(counts[s] for s in states) == want:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"BullMQ did not reach {states} == {want}")
        await asyncio.sleep(0.02)


async def main(url: str) -> None:
    conn: dict[str, Any] = {"connection": url}
    node = Queue("node", conn)
    release = asyncio.Event()

    async def process(job: Any, token: str) -> str:
        if job.name == "fail":
            raise ValueError("boom")
        if job.name == "hold":
            await release.wait()
        return "ok"

    worker = Worker("node", process, {**conn, "concurrency": 1})
    for i in range(3):
        await node.add("ok", {"i": i}, {"removeOnComplete": False})
    for i in range(2):
        await node.add("fail", {"i": i}, {"attempts": 1, "removeOnFail": False})
    await wait_for(node, ("completed", "failed"), 5)
    # One job runs and stays running: the worker has concurrency 1 and waits on `release`.
    await node.add("hold", {})
    await wait_for(node, ("active",), 1)
    for i in range(4):
        await node.add("ok", {"i": i})
    for i in range(2):
        await node.add("ok", {"later": i}, {"delay": 600_000})
    for p in (1, 5, 5):
        await node.add("ok", {"p": p}, {"priority": p})
    flow = FlowProducer(url)
    child = {"name": "child", "queueName": "node-children", "data": {}}
    await flow.add({"name": "parent", "queueName": "node", "data": {}, "children": [child]})
    held = Queue("node-held", conn)
    for i in range(2):
        await held.add("ok", {"i": i})
    await held.pause()
    custom = Queue("custom", {**conn, "prefix": "myapp"})
    await custom.add("ok", {})
    queues = {"node": node, "node-held": held, "custom": custom}
    counts = {name: await q.getJobCounts(*TYPES) for name, q in queues.items()}
    print(json.dumps(counts), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    release.set()
    await worker.close()
    for q in queues.values():
        await q.close()
    await flow.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
