"""Sentinel failover and durable enqueue, measured on loopback (docs/reliability.md).

1. Failover: a primary, a replica and three sentinels (down-after-milliseconds 1000); a producer
   enqueues every 5 ms through a Sentinel-managed client; the primary is SIGKILLed. Measured per round:
   when the sentinels promote the replica, when the first enqueue after the kill succeeds, and how
   many acknowledged jobs the new primary does not have (lost to asynchronous replication).
2. A manual failover (the old primary alive): how long writes still reach it, and how many are lost,
   with redis-py's behaviour (``REDIS_SENTINEL_RECHECK_SECONDS=0``) and arqscale's default (1 s).
3. Durable enqueue: the same jobs enqueued with ``wait_replicas`` 0 and 1, in one run, side by side:
   per-enqueue latency (one at a time) and throughput (32 concurrent producers).

    .venv/bin/python bench/failover.py [--rounds 3] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis.asyncio import Redis

from arqscale.core.connection import create_redis
from arqscale.core.producer import Producer
from arqscale.core.settings import RedisSettings
from arqscale.core.spec import parse_queues
from sentinel_servers import SentinelSetup

SPECS = parse_queues({"queues": {"q": {"functions": ["tasks.noop"]}}})


def settings_of(setup: SentinelSetup, **extra: object) -> RedisSettings:
    return RedisSettings(sentinels=setup.sentinels, **extra)  # type: ignore[arg-type]


async def failover_round(workdir: Path) -> dict[str, float]:
    setup = SentinelSetup(workdir).start()
    redis = create_redis(settings_of(setup), socket_timeout=1, socket_connect_timeout=1)
    producer = Producer(redis, SPECS)
    acknowledged: dict[str, tuple[float, float]] = {}  # job id -> (sent, acknowledged)
    stop = asyncio.Event()
    wrote_after_kill = asyncio.Event()
    killed = float("inf")

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.monotonic()
            try:
                await producer.enqueue("q", "noop", job_id=f"j{n}")
                acknowledged[f"j{n}"] = (sent, time.monotonic())
                if sent > killed:  # sent after the kill: the new primary took it
                    wrote_after_kill.set()
            except Exception:  # the outage itself: not acknowledged, not counted
                pass
            await asyncio.sleep(0.005)

    task = asyncio.create_task(produce())
    try:
        await asyncio.sleep(1.0)
        old = setup.kill_primary()
        killed = time.monotonic()
        new = await asyncio.to_thread(setup.wait_for_promotion, old, 60)
        promoted = time.monotonic()
        await asyncio.wait_for(wrote_after_kill.wait(), 60)
        first_write = min(done for sent, done in acknowledged.values() if sent > killed)
        stop.set()
        await task
        before = [j for j, (sent, _) in acknowledged.items() if sent <= killed]
        async with create_redis(settings_of(setup)) as check:
            present = await check.exists(*(f"arq:job:{j}" for j in before)) if before else 0
        assert new == setup.replica.port
        return {
            "promoted_s": promoted - killed,
            "writes_back_s": first_write - killed,
            "acknowledged_before_kill": len(before),
            "lost": len(before) - present,
        }
    finally:
        stop.set()
        await redis.aclose()
        setup.stop()


async def manual_failover(workdir: Path, recheck: float) -> dict[str, float]:
    """``SENTINEL FAILOVER`` with the old primary alive: writes every 100 ms, each to its own key; once
    the old primary has been demoted, how many acknowledged writes the new primary lacks, and for how
    long writes still went to the old one."""
    setup = SentinelSetup(workdir).start()
    redis = create_redis(settings_of(setup, sentinel_recheck_seconds=recheck))
    try:
        old = setup.master_port()
        with setup.sentinel_client() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
        switched = time.monotonic()
        acknowledged, last_old = [], switched
        for i in range(200):  # 20 s: longer than the sentinels take to demote the old primary
            try:
                await redis.set(f"w{i}", 1)
                acknowledged.append(f"w{i}")
                if int((await redis.info("server"))["tcp_port"]) == old:
                    last_old = time.monotonic()
            except Exception:
                pass
            await asyncio.sleep(0.1)
        async with create_redis(settings_of(setup)) as check:
            present = await check.exists(*acknowledged)
        return {"to_old_s": last_old - switched, "acknowledged": len(acknowledged), "lost": len(acknowledged) - present}
    finally:
        await redis.aclose()
        setup.stop()


async def _one_mode(redis: Redis, wait: int, jobs: int, tag: str) -> dict[str, float]:
    producer = Producer(redis, SPECS, wait_replicas=wait, wait_timeout_ms=1000)
    latencies = []
    for i in range(jobs // 4):  # one at a time: the latency a caller waits
        started = time.perf_counter()
        await producer.enqueue("q", "noop", job_id=f"lat-{tag}-{i}")
        latencies.append(time.perf_counter() - started)
    latencies.sort()

    async def lane(lane_no: int) -> None:
        for i in range(jobs // 32):
            await producer.enqueue("q", "noop", job_id=f"thr-{tag}-{lane_no}-{i}")

    started = time.perf_counter()
    await asyncio.gather(*(lane(n) for n in range(32)))  # 32 concurrent producers: throughput
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "jobs_per_s": (jobs // 32 * 32) / elapsed,
    }


async def durable_cost(workdir: Path, jobs: int, reps: int) -> dict[int, dict[str, float]]:
    """Both modes in each repetition, in alternating order (the machine's noise hits both alike);
    the median of each figure over the repetitions."""
    setup = SentinelSetup(workdir).start()
    runs: dict[int, list[dict[str, float]]] = {0: [], 1: []}
    try:
        redis = create_redis(settings_of(setup))
        try:
            for rep in range(reps):
                for wait in (0, 1) if rep % 2 == 0 else (1, 0):
                    runs[wait].append(await _one_mode(redis, wait, jobs, f"{rep}-{wait}"))
                    await redis.flushdb()
        finally:
            await redis.aclose()
    finally:
        setup.stop()
    return {wait: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for wait, rows in runs.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5, help="durable enqueue: repetitions of both modes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [await failover_round(Path(tmp) / f"round-{n}") for n in range(args.rounds)]
        print("failover (SIGKILL of the primary, down-after-milliseconds 1000):")
        print(f"{'round':>5} {'promoted s':>11} {'writes back s':>14} {'acked before kill':>18} {'lost':>5}")
        for n, r in enumerate(rows, 1):
            print(
                f"{n:>5} {r['promoted_s']:>11.2f} {r['writes_back_s']:>14.2f} "
                f"{int(r['acknowledged_before_kill']):>18} {int(r['lost']):>5}"
            )
        print("\nmanual SENTINEL FAILOVER, old primary alive (a write every 100 ms for 20 s):")
        print(
            f"{'REDIS_SENTINEL_RECHECK_SECONDS':>31} {'writes to the old primary for s':>32} {'acked':>6} {'lost':>5}"
        )
        for recheck in (0.0, 1.0):
            m = await manual_failover(Path(tmp) / f"manual-{recheck}", recheck)
            print(f"{recheck:>31g} {m['to_old_s']:>32.2f} {int(m['acknowledged']):>6} {int(m['lost']):>5}")
        cost = await durable_cost(Path(tmp) / "durable", args.jobs, args.reps)
        print(f"\ndurable enqueue ({args.jobs} jobs per mode and repetition, median of {args.reps}; one replica):")
        print(f"{'REDIS_WAIT_REPLICAS':>20} {'p50 ms':>8} {'p99 ms':>8} {'jobs/s (32 concurrent)':>24}")
        for wait, row in cost.items():
            print(f"{wait:>20} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} {row['jobs_per_s']:>24.0f}")
        ratio = cost[1]["jobs_per_s"] / cost[0]["jobs_per_s"]
        print(
            f"throughput with WAIT 1 / without: {ratio:.2f}; p50 latency: {cost[1]['p50_ms'] / cost[0]['p50_ms']:.2f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
