"""One worker process of this checkout against one of an earlier commit, draining no-op jobs on one Redis, in turns.

    python bench/worker_ab.py --baseline 696809c                   # c50, 8,000 jobs, 4 rounds per version
    python bench/worker_ab.py --baseline 696809c --jobs 20000 --rounds 6 --concurrency 100

One private redis-server. Each round, for each version in turn (the order alternating), the queue is filled with
``--jobs`` no-op jobs (``bench/pyclient.py``, the version's producer), the scripts are flushed, and one
``python -m arqscale worker`` of that version (its ``src/`` first on ``PYTHONPATH``; the baseline's read from git
into a temporary directory) drains them. The clock and Redis' CPU (``INFO cpu``, user + sys) are read once the
first jobs are taken and 50 ms have passed (the scripts loaded, the lanes running), and again when the queue is
empty: Redis CPU per job and jobs per second over that window, medians over the rounds after a first warm-up
round. ``bench/run.py`` measures the same window from the first job's start, loading included; this compares two
versions of the steady state only, side by side: the machine's noise moves both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from redis_cost import redis_cpu, source_tree
from run import BENCH, ROOT, default_redis_server, free_port, private_redis

QUEUE_KEY = "arq:queue:bench"
COMPLETED_KEY = "arqscale:bench:completed"  # the queue's index of completed jobs
PARKED_FLOOR = 2**52  # scores.PARKED_FLOOR and above: taken (parked under a lease), not waiting


def drain(r: redis.Redis, src: Path, workdir: Path, jobs: int, concurrency: int) -> tuple[float, float]:
    """One version's worker drains ``jobs`` no-op jobs: (Redis CPU µs per job, jobs/s) over the steady window."""
    queues = workdir / f"queues-{concurrency}.yaml"
    queues.write_text(
        "queues:\n  bench:\n    functions: [tasks.noop]\n"
        f"    concurrency: {concurrency}\n    retention: {{completed_max: 1000000}}\n"
    )
    url = f"redis://127.0.0.1:{r.connection_pool.connection_kwargs['port']}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), str(BENCH)]),
        "REDIS_URL": url,
        "ARQSCALE_QUEUES_FILE": str(queues),
        "ARQSCALE_WORKER_PORT": str(free_port()),
    }
    r.flushall()
    r.script_flush()
    fill = [sys.executable, str(BENCH / "pyclient.py"), "arqscale", "fill", url, "--n", str(jobs), "--task", "noop"]
    subprocess.run([*fill, "--queues-file", str(queues)], env=env, check=True, capture_output=True)
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "arqscale", "worker", "--queue", "bench"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while r.zcount(QUEUE_KEY, "-inf", f"({PARKED_FLOOR}") == jobs:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker took no job: see {workdir / 'worker.log'}")
            time.sleep(0.001)
        time.sleep(0.05)
        done, cpu, start = r.zcard(COMPLETED_KEY), redis_cpu(r), time.monotonic()
        while r.zcard(QUEUE_KEY) > 0:
            if worker.poll() is not None or time.monotonic() > deadline + 240:
                raise RuntimeError(f"the worker stopped with jobs left: see {workdir / 'worker.log'}")
            time.sleep(0.005)
        seconds, cpu = time.monotonic() - start, redis_cpu(r) - cpu
        done = r.zcard(COMPLETED_KEY) - done
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
    if done < jobs // 2:
        raise RuntimeError(f"only {done} of {jobs} jobs ended in the window: ask for more --jobs")
    return cpu / done * 1e6, done / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git commit to compare with")
    parser.add_argument("--jobs", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds per version (after one warm-up)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--redis-server", default=default_redis_server())
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, private_redis(args.redis_server) as r:
        versions = {"this checkout": ROOT / "src", f"baseline {args.baseline}": source_tree(args.baseline, Path(tmp))}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
        for n in range(args.rounds + 1):
            order = list(versions.items()) if n % 2 == 0 else list(reversed(versions.items()))
            for name, src in order:
                cost, rate = drain(r, src, Path(tmp), args.jobs, args.concurrency)
                print(f"round {n} {name}: {cost:.1f} µs/job, {rate:,.0f} jobs/s", file=sys.stderr)
                if n > 0:
                    results[name].append((cost, rate))
    print(f"One worker at concurrency {args.concurrency}, {args.jobs:,} no-op jobs, {args.rounds} rounds a version:\n")
    print("| version | Redis CPU µs/job, median (range) | jobs/s, median (range) |")
    print("| --- | ---: | ---: |")
    for name, rows in results.items():
        costs, rates = [c for c, _ in rows], [x for _, x in rows]
        print(
            f"| {name} | {statistics.median(costs):.1f} ({min(costs):.1f}-{max(costs):.1f}) "
            f"| {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) |"
        )
    this, base = (statistics.median(c for c, _ in rows) for rows in results.values())
    print(f"\nRedis CPU per job, this / baseline (medians) = {this / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
