"""Pickup cost against running jobs: arqscale's pickup script now, and (side by side, same run) the
protocol before issue 19, which kept running jobs in the queue and walked past them.

    python bench/pickup_cost.py                     # 1,000,000 waiting; 0, 1,000, 10,000, 30,000 running
    python bench/pickup_cost.py --waiting 100000 --running 0 10000 --calls 100

One private redis-server on a free loopback port. For each running count: the queue holds ``--waiting``
ready jobs, ``R`` of them leased to a worker; then ``--calls`` pickups of one job each are timed by Redis
itself (INFO commandstats: microseconds per EVALSHA), so the figure is the script's own cost, free of
client and network noise. Each row is measured on a fresh queue. Results go to stdout as Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from types import ModuleType

import redis

from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.worker import pickup
from run import ROOT, private_redis  # bench/ is sys.path[0] when run as a script

BASELINE = "a9993fc"  # main before the ownership protocol: running jobs stayed in the queue
BATCH = 20_000


def spec() -> QueueSpec:
    return parse_queues({"queues": {"bench": {"functions": ["tasks.noop"], "lease_seconds": 3600}}})["bench"]


def baseline_module(commit: str) -> ModuleType | None:
    """The pickup module as it was at ``commit`` (read from git), or None outside a git checkout."""
    try:
        source = subprocess.run(
            ["git", "show", f"{commit}:src/arqscale/worker/pickup.py"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return None
    module = ModuleType("baseline_pickup")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, "baseline_pickup.py", "exec"), module.__dict__)  # our own history, not input
    return module


def fill(r: redis.Redis, s: QueueSpec, waiting: int) -> None:
    now = int(time.time() * 1000) - 10_000_000
    for start in range(0, waiting, BATCH):
        r.zadd(s.queue_key, {f"j{i}": now + i for i in range(start, min(start + BATCH, waiting))})


def server_us_per_call(r: redis.Redis) -> float:
    stats = r.info("commandstats")
    return float(stats["cmdstat_evalsha"]["usec_per_call"])


def measure_current(r: redis.Redis, s: QueueSpec, running: int, calls: int) -> float:
    ops_redis = _async_client(r)
    import asyncio

    async def go() -> float:
        ops = pickup.QueueOps(ops_redis, s, "bench-worker")
        for n in range(0, running, pickup.MAX_PICKUP):
            await ops.pickup(min(pickup.MAX_PICKUP, running - n), f"lease.{n}")
        r.config_resetstat()
        for n in range(calls):
            assert len((await ops.pickup(1, f"take.{n}")).jobs) == 1
        await ops_redis.aclose()
        return server_us_per_call(r)

    return asyncio.run(go())


def measure_baseline(r: redis.Redis, s: QueueSpec, running: int, calls: int, module: ModuleType) -> float:
    keys = pickup.QueueKeys.for_queue(s.name, s.queue_key)
    ids = r.zrange(s.queue_key, 0, running - 1) if running else []
    expiry = int(time.time() * 1000) + 3_600_000
    for start in range(0, len(ids), BATCH):
        with r.pipeline(transaction=False) as pipe:
            for job_id in ids[start : start + BATCH]:
                pipe.set(b"arq:in-progress:" + job_id, b"old-worker", px=3_600_000)
            pipe.zadd(keys.active, {job_id: expiry for job_id in ids[start : start + BATCH]})
            pipe.execute()
    sha = r.script_load(module.PICKUP_LUA.arq.source)
    lows = [band.low for band in module.scores.bands(s)] if hasattr(module, "scores") else [0]
    r.config_resetstat()
    for _ in range(calls):
        args = [int(time.time() * 1000), 1, "bench-worker", 3_600_000, 0, 0, pickup.RETRY_TTL_MS, *lows]
        reply = r.evalsha(sha, 4, s.queue_key, keys.active, keys.paused, f"arqscale:{s.name}:rate", *args)
        assert len(reply) > 2, reply
    return server_us_per_call(r)


def _async_client(r: redis.Redis):  # type: ignore[no-untyped-def]
    from redis.asyncio import Redis as AsyncRedis

    kwargs = r.connection_pool.connection_kwargs
    return AsyncRedis(host=kwargs["host"], port=kwargs["port"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--running", type=int, nargs="+", default=[0, 1_000, 10_000, 30_000])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--baseline", default=BASELINE, help="git commit of the earlier protocol ('' to skip)")
    args = parser.parse_args()
    s = spec()
    module = baseline_module(args.baseline) if args.baseline else None
    with private_redis() as r:
        rows = []
        for running in args.running:
            row = [f"{running:,}"]
            r.flushall()
            fill(r, s, args.waiting)
            row.append(f"{measure_current(r, s, running, args.calls):,.1f}")
            if module is not None:
                r.flushall()
                fill(r, s, args.waiting)
                row.append(f"{measure_baseline(r, s, running, args.calls, module):,.1f}")
            rows.append(row)
            print(" | ".join(row), file=sys.stderr)
    head = ["running jobs", "pickup now (µs per call)"] + ([f"before ({args.baseline}, µs per call)"] if module else [])
    print(f"Pickup of one job, {args.waiting:,} waiting, {args.calls} calls per row (Redis' own time per call):\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nmedian of rows, now: {statistics.median(float(r[1].replace(',', '')) for r in rows):.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
