"""What per-key limits add to a pickup and a finish, timed by Redis itself (INFO commandstats, microseconds
per EVALSHA: the scripts' own cost, free of client and network noise), on one private redis-server.

    python bench/group_cost.py                 # 100,000 waiting jobs, 300 pickups of one job per case
    python bench/group_cost.py --waiting 20000 --calls 100

Cases: a queue without ``group:``; keys given at enqueue (``group=``), 1,000 users, limits never reached;
keys read from a keyword argument in the JSON payload (``group.key``); and the cost of holding a job back
(plain arq producer, one user at its limit: each pickup moves up to ``HOLD_MAX`` jobs aside). Markdown out.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.serializers import json_dumps
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.worker import pickup
from run import private_redis  # bench/ is sys.path[0] when run as a script

USERS = 1000


def spec(group: dict[str, Any] | None) -> QueueSpec:
    body: dict[str, Any] = {"functions": ["tasks.noop"], "lease_seconds": 3600}
    if group:
        body["group"] = group
    return parse_queues({"queues": {"bench": body}})["bench"]


def script_usec(r: redis.Redis) -> tuple[int, float]:
    """(script calls, µs Redis spent in them): EVALSHA, or FCALL where the worker's scripts go by Redis Functions."""
    stats = r.info("commandstats")
    rows = [stats.get(f"cmdstat_{name}", {}) for name in ("evalsha", "fcall")]
    return sum(int(row.get("calls", 0)) for row in rows), sum(float(row.get("usec", 0)) for row in rows)


def us_per_call(r: redis.Redis) -> float:
    calls, usec = script_usec(r)
    return usec / max(calls, 1)


async def fill(ar: AsyncRedis, s: QueueSpec, waiting: int, how: str) -> None:
    if how == "plain_arq":  # arq's own layout, one user: what a plain arq producer's burst looks like
        now = int(time.time() * 1000) - 1_000_000
        async with ar.pipeline(transaction=False) as pipe:
            for i in range(waiting):
                pipe.set(f"arq:job:j{i}", json_dumps({"t": 1, "f": "noop", "a": [], "k": {"user_id": "u"}, "et": now}))
            pipe.zadd(s.queue_key, {f"j{i}": now + i for i in range(waiting)})
            await pipe.execute()
        return
    producer = Producer(ar, {"bench": s})
    for start in range(0, waiting, 1000):
        batch = []
        for i in range(start, min(start + 1000, waiting)):
            user = f"user{i % USERS}"
            if how == "explicit":
                batch.append(JobRequest(function="noop", job_id=f"j{i}", group=user))
            else:
                batch.append(JobRequest(function="noop", job_id=f"j{i}", kwargs={"user_id": user}))
        await producer.enqueue_many("bench", batch)


async def case(r: redis.Redis, port: int, s: QueueSpec, how: str, waiting: int, calls: int) -> tuple[float, float]:
    r.flushall()
    ar = AsyncRedis(port=port)
    await fill(ar, s, waiting, how)
    ops = pickup.QueueOps(ar, s, "bench-worker")
    r.config_resetstat()
    taken = []
    for n in range(calls):
        taken += (await ops.pickup(1, f"take.{n}")).jobs
    pick_us = us_per_call(r)
    r.config_resetstat()
    for job in taken:
        await ops.finish([pickup.Finish("ok", job.job_id, "", token=job.token)])
    finish_us = us_per_call(r) if taken else 0.0
    await ar.aclose()
    return pick_us, finish_us


async def burst(r: redis.Redis, port: int, s: QueueSpec, n: int) -> tuple[int, float, float]:
    """A plain arq burst of ``n`` jobs of one user at its limit, then one job of another: the calls a worker's
    first pickup makes (it calls again while the script says it stopped at its hold budget) until the other
    user's job is taken; returns calls, Redis' total ms for them, and the longest call's ms."""
    r.flushall()
    ar = AsyncRedis(port=port)
    await fill(ar, s, n, "plain_arq")
    await ar.set("arq:job:other", json_dumps({"t": 1, "f": "noop", "a": [], "k": {"user_id": "v"}, "et": 0}))
    await ar.zadd(s.queue_key, {"other": int(time.time() * 1000)})
    # The first job of the user takes its only slot; from then on its jobs are held back.
    ops = pickup.QueueOps(ar, s, "bench-worker")
    calls, longest, total = 0, 0.0, 0.0
    while True:
        r.config_resetstat()
        result = await ops.pickup(10, f"burst.{calls}")
        calls += 1
        spent = script_usec(r)[1] / 1000
        total, longest = total + spent, max(longest, spent)
        if any(j.job_id == "other" for j in result.jobs) or result.wait_ms != 0:
            break
    await ar.aclose()
    return calls, total, longest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with private_redis() as r:
        limits = {"concurrency": 100_000, "rate_limit": {"max_jobs": 1_000_000, "interval": 60}}
        cases = [
            ("no `group:`", spec(None), "explicit_none"),
            ("`group=` at enqueue, 1,000 keys, concurrency + rate", spec(limits), "explicit"),
            ("`group.key: user_id` from the JSON payload, concurrency + rate", spec({"key": "user_id", **limits}),
             "kwarg"),
        ]  # fmt: skip
        print(f"{args.waiting:,} waiting jobs; Redis' own time per call (µs), {args.calls} pickups of one job\n")
        print("| queue | pickup µs | finish µs |\n| --- | ---: | ---: |")
        for label, s, how in cases:
            fill_how = "kwarg" if how == "explicit_none" else how
            pick_us, finish_us = asyncio.run(
                case(r, r.connection_pool.connection_kwargs["port"], s, fill_how, args.waiting, args.calls)
            )
            print(f"| {label} | {pick_us:,.1f} | {finish_us:,.1f} |")
        held = spec({"key": "user_id", "concurrency": 1})
        n = 3 * pickup.HOLD_MAX
        pick_us, _ = asyncio.run(case(r, r.connection_pool.connection_kwargs["port"], held, "plain_arq", n, 3))
        print(f"\nHolding back a plain arq burst ({n:,} jobs of one user at its limit): {pick_us:,.0f} µs per")
        print(f"pickup, each moving up to {pickup.HOLD_MAX:,} jobs aside: {pick_us / pickup.HOLD_MAX:,.1f} µs a job.")
        n = 10 * pickup.HOLD_MAX
        calls, total, longest = asyncio.run(burst(r, r.connection_pool.connection_kwargs["port"], held, n))
        print(f"\nA plain arq burst of {n:,} jobs of one user, then one of another: the worker's first pickup made")
        print(f"{calls} script calls back to back ({total:,.1f} ms of Redis in all, the longest {longest:,.1f} ms) and")
        print("took the other user's job in the last one.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
