"""What many mostly idle workers of one queue cost Redis while jobs trickle in.

Every arqscale worker wakes on two kinds of message: our producers' wake-ups, and client-tracking
invalidations of the queue key (how plain arq producers' jobs are seen). Any change of the queue key (an
enqueue, a pickup parking a job, a finish) invalidates it for every worker, and each one with a free slot
runs a pickup. This measures how that grows with the number of workers: N worker processes of one queue, a
steady trickle of no-op jobs (through arqscale's Producer, and through plain arq's ``enqueue_job``), and per
job: Redis commands, pickup script calls and Redis CPU. ``bullmq``: the same trickle through BullMQ's
``Queue.add`` to N BullMQ Node workers (bench/bullmq_bench.mjs, concurrency 4 each), for comparison.

    python bench/idle_herd.py                      # 1, 4 and 12 workers, 100 jobs/s for 8 s each
    python bench/idle_herd.py --workers 1 8 --rate 200 --seconds 5 --json out.json

Only ratios within one run mean anything (shared, noisy machines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import default_redis_server, free_port, private_redis  # noqa: E402

QUEUES = """queues:
  herd:
    functions: ["tasks.noop"]
    concurrency: 4
    serializer: {serializer}
"""


def _stats(r: redis.Redis) -> tuple[int, int, float]:
    """(commands processed, EVALSHA calls, Redis CPU seconds) so far."""
    stats = r.info("stats")
    cmd = r.info("commandstats")
    cpu = r.info("cpu")
    # Script calls: EVALSHA, or FCALL where the worker's scripts go by Redis Functions.
    evalsha = sum(int(cmd.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "fcall"))
    return int(stats["total_commands_processed"]), evalsha, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def _produce(url: str, producer: str, rate: float, seconds: float, queues_file: str) -> int:
    """Enqueue ``rate`` jobs a second for ``seconds``; returns how many."""
    from arq.connections import ArqRedis
    from redis.asyncio import Redis

    from arqscale.core.models import JobRequest
    from arqscale.core.producer import Producer
    from arqscale.core.spec import load_queues

    client = Redis.from_url(url)
    specs = load_queues(Path(queues_file))
    ours = Producer(client, specs)
    plain = ArqRedis(connection_pool=client.connection_pool)
    sent, start = 0, time.monotonic()
    while (now := time.monotonic() - start) < seconds:
        due = int(now * rate) + 1
        for _ in range(due - sent):
            if producer == "arqscale":
                await ours.enqueue_many("herd", [JobRequest(function="noop")])
            else:
                await plain.enqueue_job("noop", _queue_name="arq:queue:herd")
            sent += 1
        await asyncio.sleep(max(0.0, (sent / rate) - (time.monotonic() - start)))
    await client.aclose()
    return sent


NODE_SCRIPT = BENCH / "bullmq_bench.mjs"
BULLMQ_COMPLETED = "bull:bench:completed"


def _start_workers(producer: str, workers: int, url: str, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    procs = []
    for _ in range(workers):
        if producer == "bullmq":
            cmd = ["node", str(NODE_SCRIPT), "worker", url, "--concurrency", "4"]
        else:
            env["ARQSCALE_WORKER_PORT"] = str(free_port())
            cmd = [sys.executable, "-m", "arqscale", "worker", "--queue", "herd"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def _workers_up(r: redis.Redis, producer: str, workers: int) -> bool:
    if producer == "bullmq":  # each BullMQ worker holds a blocking connection and a side one at least
        return int(r.info("clients")["connected_clients"]) > 2 * workers
    return int(r.zcard("arqscale:herd:workers")) >= workers


def _trickle_bullmq(url: str, rate: float, seconds: float) -> int:
    cmd = ["node", str(NODE_SCRIPT), "trickle", url, "--rate", str(rate), "--seconds", str(seconds)]
    done = subprocess.run(cmd, capture_output=True, check=True, timeout=seconds + 60)
    return int(json.loads(done.stdout.decode().strip().splitlines()[-1])["jobs"])


def measure(workers: int, producer: str, rate: float, seconds: float, server: str) -> dict[str, Any]:
    with private_redis(server) as r, tempfile.TemporaryDirectory() as tmp:
        port = r.connection_pool.connection_kwargs["port"]
        url = f"redis://127.0.0.1:{port}/0"
        queues = Path(tmp) / "queues.yaml"
        queues.write_text(QUEUES.format(serializer="json" if producer == "arqscale" else "pickle"))
        env = os.environ | {
            "REDIS_URL": url,
            "ARQSCALE_QUEUES_FILE": str(queues),
            "PYTHONPATH": str(BENCH),
            "ARQSCALE_LOG_LEVEL": "WARNING",
        }
        procs = _start_workers(producer, workers, url, env)
        completed = BULLMQ_COMPLETED if producer == "bullmq" else "arqscale:herd:completed"
        try:
            deadline = time.monotonic() + 60
            while not _workers_up(r, producer, workers) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(6.0)  # idle back-off reaches its longest wait
            idle_before, _, _ = _stats(r)
            time.sleep(5.0)
            idle_after, _, _ = _stats(r)
            before = _stats(r)
            if producer == "bullmq":
                sent = _trickle_bullmq(url, rate, seconds)
            else:
                sent = asyncio.run(_produce(url, producer, rate, seconds, str(queues)))
            deadline = time.monotonic() + 30
            while int(r.zcard(completed)) < sent and time.monotonic() < deadline:
                time.sleep(0.05)
            after = _stats(r)
            done = int(r.zcard(completed))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
    return {
        "workers": workers,
        "producer": producer,
        "jobs": sent,
        "completed": done,
        "commands_per_job": (after[0] - before[0]) / max(sent, 1),
        "scripts_per_job": (after[1] - before[1]) / max(sent, 1),
        "redis_cpu_us_per_job": (after[2] - before[2]) * 1e6 / max(sent, 1),
        "idle_commands_per_s_per_worker": (idle_after - idle_before) / 5.0 / workers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 12])
    parser.add_argument(
        "--producers", nargs="+", default=["arqscale", "arq", "bullmq"], choices=["arqscale", "arq", "bullmq"]
    )
    parser.add_argument("--rate", type=float, default=100.0, help="jobs per second")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--redis-server", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    server = args.redis_server or default_redis_server()
    rows = []
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| producer | workers | jobs | commands/job | scripts/job | Redis CPU µs/job | idle commands/s per worker |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for producer in args.producers:
        for n in args.workers:
            row = measure(n, producer, args.rate, args.seconds, server)
            rows.append(row)
            print(
                f"| {producer} | {n} | {row['jobs']} ({row['completed']} done) | {row['commands_per_job']:.1f} "
                f"| {row['scripts_per_job']:.2f} | {row['redis_cpu_us_per_job']:.0f} "
                f"| {row['idle_commands_per_s_per_worker']:.1f} |",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "rate": args.rate, "seconds": args.seconds}, indent=2))
    return 0 if all(r["completed"] >= r["jobs"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
