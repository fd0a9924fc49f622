"""Webhook delivery throughput: one in-process deliverer, a receiver on loopback that answers 204 at once,
N completed events written to one queue's stream, timed from the first event to the last delivery.

    python bench/webhooks_throughput.py                  # 5,000 events, concurrency 50
    python bench/webhooks_throughput.py --events 20000 --concurrency 200

What it measures is the deliverer's own cost per webhook (read, store, lease, sign, POST, settle) on this
machine, not a receiver's: real receivers answer in milliseconds, and then `concurrency / latency` bounds it.
Markdown out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time
from contextlib import ExitStack
from typing import Any

from aiohttp import web
from redis.asyncio import Redis as AsyncRedis

from arqscale.core.spec import parse_queues
from arqscale.webhooks.addresses import parse_networks
from arqscale.webhooks.deliverer import Deliverer, DelivererOptions
from run import free_port, private_redis  # bench/ is sys.path[0] when run as a script


async def main(events: int, concurrency: int) -> dict[str, Any]:
    got = 0
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal got
        await request.read()
        got += 1
        if got >= events:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    os.environ["BENCH_WHSEC"] = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    webhooks = {"endpoints": {"main": {"url": f"http://127.0.0.1:{port}/hook", "secret_env": "BENCH_WHSEC"}}}
    specs = parse_queues({"queues": {"bench": {"functions": ["tasks.noop"], "webhooks": webhooks}}})
    with ExitStack() as stack:
        sync = stack.enter_context(private_redis())
        redis = AsyncRedis(port=sync.connection_pool.connection_kwargs["port"])
        options = DelivererOptions(
            consumer="bench", allowed=parse_networks("127.0.0.0/8"), concurrency=concurrency, poll_seconds=0.05
        )
        deliverer = Deliverer(redis, specs, options)
        task = asyncio.create_task(deliverer.run())
        while not deliverer.health.started:  # noqa: ASYNC110 - a flag of the deliverer's, polled briefly at start
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(events):
                pipe.xadd("arqscale:bench:events", {"event": "completed", "job": f"j{i}", "at": 1, "try": 1})
            await pipe.execute()
        await asyncio.wait_for(done.wait(), 600)
        seconds = time.perf_counter() - t0
        deliverer.request_stop()
        await task
        await redis.aclose()
    await runner.cleanup()
    return {"events": events, "concurrency": concurrency, "seconds": seconds, "per_second": events / seconds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    a = parser.parse_args()
    r = asyncio.run(main(a.events, a.concurrency))
    print("| events | concurrency | seconds | webhooks/s |\n| ---: | ---: | ---: | ---: |")
    print(f"| {r['events']} | {r['concurrency']} | {r['seconds']:.2f} | {r['per_second']:.0f} |")
