"""Producer side of the benchmarks for arq and arqscale, one subprocess per measurement.

``python bench/pyclient.py SYSTEM ACTION URL [options]`` where SYSTEM is ``arq`` (arq's own
``ArqRedis.enqueue_job``, pickle payloads, as plain arq users enqueue) or ``arqscale`` (``Producer``,
JSON payloads, wake signal) and ACTION is:

- ``fill --n N [--task noop|sleep]``: pre-enqueue N jobs as fast as possible (not timed for the report).
- ``enqueue --mode single|bulk --n N --batch B``: enqueue rate; prints ``{"jobs_per_s": ...}``.
- ``latency --samples S --gap G``: enqueue ``stamp`` jobs one at a time, G seconds apart.

Both run on uvloop, as an application server would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import Redis

from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.spec import load_queues

QUEUE = "bench"
QUEUE_KEY = "arq:queue:bench"
WARMUP = 20

EnqueueOne = Callable[[str, tuple[object, ...]], Awaitable[object]]
EnqueueBatch = Callable[[int, str], Awaitable[object]]


class Client:
    """One producer: enqueue one job, or a batch of ``noop`` jobs, in the system's own way."""

    def __init__(self, one: EnqueueOne, batch: EnqueueBatch, close: Callable[[], Awaitable[None]]) -> None:
        self.one = one
        self.batch = batch
        self.close = close


async def arq_client(url: str) -> Client:
    pool: ArqRedis = await create_pool(RedisSettings.from_dsn(url), default_queue_name=QUEUE_KEY)

    async def one(function: str, args: tuple[object, ...]) -> object:
        return await pool.enqueue_job(function, *args)

    async def batch(n: int, function: str = "noop") -> object:
        # arq has no bulk enqueue; concurrent enqueue_job calls are what an arq user can do.
        return await asyncio.gather(*(pool.enqueue_job(function) for _ in range(n)))

    return Client(one, batch, pool.aclose)


async def arqscale_client(url: str, queues_file: Path) -> Client:
    redis = Redis.from_url(url)
    producer = Producer(redis, load_queues(queues_file))

    async def one(function: str, args: tuple[object, ...]) -> object:
        return await producer.enqueue(QUEUE, function, *args)

    async def batch(n: int, function: str = "noop") -> object:
        return await producer.enqueue_many(QUEUE, [JobRequest(function=function) for _ in range(n)])

    return Client(one, batch, redis.aclose)


async def fill(client: Client, n: int, function: str = "noop") -> dict[str, float]:
    start = time.perf_counter()
    done = 0
    while done < n:
        size = min(500, n - done)
        await client.batch(size, function)
        done += size
    return {"jobs": n, "seconds": time.perf_counter() - start}


async def enqueue(client: Client, mode: str, n: int, batch: int) -> dict[str, float]:
    for _ in range(WARMUP):  # connections open, scripts loaded
        await client.one("noop", ())
    start = time.perf_counter()
    if mode == "single":
        for _ in range(n):
            await client.one("noop", ())
    else:
        done = 0
        while done < n:
            size = min(batch, n - done)
            await client.batch(size, "noop")
            done += size
    seconds = time.perf_counter() - start
    return {"jobs": n, "seconds": seconds, "jobs_per_s": n / seconds}


async def latency(client: Client, samples: int, gap: float) -> dict[str, float]:
    for _ in range(samples):
        await client.one("stamp", (time.time(),))
        await asyncio.sleep(gap)
    return {"samples": samples}


async def run(args: argparse.Namespace) -> dict[str, float]:
    if args.system == "arq":
        client = await arq_client(args.url)
    else:
        client = await arqscale_client(args.url, args.queues_file)
    try:
        if args.action == "fill":
            return await fill(client, args.n, args.task)
        if args.action == "enqueue":
            return await enqueue(client, args.mode, args.n, args.batch)
        return await latency(client, args.samples, args.gap)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=["arq", "arqscale"])
    parser.add_argument("action", choices=["fill", "enqueue", "latency"])
    parser.add_argument("url")
    parser.add_argument("--queues-file", type=Path, help="arqscale's queues file (system arqscale)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--task", choices=["noop", "sleep"], default="noop", help="the function filled jobs call")
    parser.add_argument("--mode", choices=["single", "bulk"], default="single")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.02)
    args = parser.parse_args()
    if args.system == "arqscale" and args.queues_file is None:
        parser.error("--queues-file is required for arqscale")
    print(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()
