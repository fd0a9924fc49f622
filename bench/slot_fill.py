"""How full one worker keeps its slots on I/O-bound jobs: what the reserve (``Worker._reserve_room``) buys.

A job that awaits D ms at concurrency C could complete at C / D jobs/s. It completes slower when a freed slot
stays empty (waiting for the next round trip to bring a job) or when the job overruns D (a busy event loop).
This runs N pre-enqueued jobs of D ms through one in-process worker at concurrency C, samples how many jobs run
every 5 ms, and reports jobs/s, the mean number running (slot occupancy), the mean held in the reserve, and the
implied time per job (mean running / jobs/s). Each version runs in a child process of its own, alternating:

    python bench/slot_fill.py --baseline 38a3774                     # c100, 20 ms jobs, both versions
    python bench/slot_fill.py --concurrency 500 --ms 50 --jobs 20000 --rounds 3

One private redis-server, flushed between runs. Only ratios within one run mean anything (shared machines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from redis_cost import source_tree  # noqa: E402
from run import private_redis  # noqa: E402


async def child(port: int, concurrency: int, ms: float, jobs: int) -> dict[str, Any]:
    """One run, in this (child) process: the worker under test is whatever ``arqscale`` PYTHONPATH gives."""
    from redis.asyncio import Redis

    from arqscale.core.models import JobRequest
    from arqscale.core.producer import Producer
    from arqscale.core.spec import parse_queues
    from arqscale.worker.loop import Worker

    async def wait(ctx: dict[str, Any]) -> None:
        await asyncio.sleep(ms / 1000)

    redis = Redis(port=port)
    spec = parse_queues({"queues": {"fill": {"functions": ["tasks.noop"], "concurrency": concurrency}}})["fill"]
    producer = Producer(redis, {"fill": spec})
    for i in range(0, jobs, 1000):
        batch = [JobRequest(function="noop", job_id=f"j{k}") for k in range(i, min(i + 1000, jobs))]
        await producer.enqueue_many("fill", batch)
    worker = Worker(spec, redis, functions={"noop": wait})
    running: list[int] = []
    reserved: list[int] = []
    task = asyncio.create_task(worker.run())
    started = time.perf_counter()
    k = 0
    while True:
        k += 1
        if k % 20 == 0 and not worker._running and not await redis.zcard(worker.ops.keys.queue):
            break
        running.append(len(worker._running))
        reserved.append(len(getattr(worker, "_reserved", ())))  # none before the reserve existed
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    worker.request_drain()
    await task
    await redis.aclose()
    rate = jobs / elapsed
    return {
        "jobs_per_s": rate,
        "of_ideal": rate / (concurrency / (ms / 1000)),
        "mean_running": statistics.mean(running),
        "mean_reserved": statistics.mean(reserved),
        "implied_ms": statistics.mean(running) / rate * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--ms", type=float, default=20, help="how long each job awaits")
    parser.add_argument("--jobs", type=int, default=15000)
    parser.add_argument("--rounds", type=int, default=2, help="runs per version, alternating")
    parser.add_argument("--baseline", default="", help="also the worker as of this git commit")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import uvloop

        port, concurrency, ms, jobs = args.child
        result = uvloop.run(child(int(port), int(concurrency), float(ms), int(jobs)))
        print(json.dumps(result))
        return 0
    load = Path("/proc/loadavg").read_text().split()[:3]
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp, private_redis() as client:
        port = client.connection_pool.connection_kwargs["port"]
        versions: list[tuple[str, Path]] = [("this checkout", BENCH.parent / "src")]
        if args.baseline:
            versions.append((f"baseline {args.baseline}", source_tree(args.baseline, Path(tmp) / "base")))
        for rnd in range(args.rounds):
            for label, src in versions if rnd % 2 == 0 else list(reversed(versions)):
                client.flushall()
                env = os.environ | {"PYTHONPATH": os.pathsep.join([str(src), str(BENCH)])}
                cmd = [sys.executable, __file__, "--child", str(port), str(args.concurrency), str(args.ms)]
                out = subprocess.run([*cmd, str(args.jobs)], env=env, capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((label, result))
                print(f"round {rnd + 1} {label}: {result['jobs_per_s']:,.0f} jobs/s", file=sys.stderr)
    load_end = Path("/proc/loadavg").read_text().split()[:3]
    ideal = args.concurrency / (args.ms / 1000)
    print(
        f"{args.jobs:,} jobs of {args.ms:g} ms at concurrency {args.concurrency} (ideal {ideal:,.0f} jobs/s); "
        f"load average {' '.join(load)} at start, {' '.join(load_end)} at end\n"
    )
    print("| version | jobs/s | of ideal | mean running | mean reserved | implied ms per job |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, r in rows:
        print(
            f"| {label} | {r['jobs_per_s']:,.0f} | {r['of_ideal']:.0%} | {r['mean_running']:.0f} "
            f"| {r['mean_reserved']:.1f} | {r['implied_ms']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
