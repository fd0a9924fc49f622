"""Which autoscaling signal serves best: the same traffic through depth, backlog, oldest-age and latency-target
scaling, each with the local autoscaler (the chart's HPA algorithm) over real worker processes.

    .venv/bin/python bench/autoscale_signals.py [--signals waiting,backlog,oldest_waiting,wait_target] [--out FILE]

Traffic (same seed for every signal): a steady load of 6 fast jobs/s (0.5 s each) with a slow type mixed
in (0.5 jobs/s of 6 s), a burst of 300 fast jobs at t=20 s and a wave of 40 slow jobs at t=60 s; 100 s in
all. One queue, concurrency 4 per worker, 1 to 10 workers. Targets: depth (``waiting``) and ``backlog``
20 jobs per worker, ``oldest_waiting`` 10 s (the chart's rule: replicas = ceil(age / target)),
``wait_target`` 10 s.

Time is compressed so a run takes minutes: the autoscaler syncs every 1 s (a cluster's HPA: 15 s), the
chart's behavior keeps its form with shorter times (scale up by 100 % or 4 workers per 5 s instead of
15 s; scale down after a 15 s window instead of 300 s, by half per 10 s instead of 60 s), and the
wait_target signal smooths over 10 s and holds 5 s (the exporter's defaults: 30 s and 30 s). The
exporter refreshes every 1 s. What a cluster adds on top is in docs/autoscaling.md.

Reported per signal: how long the burst and the slow wave took to finish (from their enqueue to their
last job's end), p95 and max wait (enqueue to start) over every job, worker-seconds (processes alive,
draining included), replica changes and direction reversals (flapping).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from redis.asyncio import Redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from arqscale.autoscaler import hpa as hpa_mod  # noqa: E402
from arqscale.autoscaler.metrics_client import MetricsApi, MetricsClient  # noqa: E402
from arqscale.autoscaler.pool import WorkerPool  # noqa: E402
from arqscale.autoscaler.runner import Autoscaler, describe  # noqa: E402
from arqscale.core.producer import Producer  # noqa: E402
from arqscale.core.spec import parse_queues  # noqa: E402
from arqscale.exporter.server import Exporter, ExporterOptions  # noqa: E402
from arqscale.exporter.wait_target import WaitTargetTracker  # noqa: E402
from autoscale_tasks import DONE_KEY  # noqa: E402
from run import default_redis_server, free_port  # noqa: E402

SIGNALS = ("waiting", "backlog", "oldest_waiting", "wait_target")
DURATION = 100.0
STEADY_FAST_PER_S, FAST_S = 6.0, 0.5
STEADY_SLOW_PER_S, SLOW_S = 0.5, 6.0
BURST_AT, BURST_JOBS = 20.0, 300
WAVE_AT, WAVE_JOBS = 60.0, 40
SYNC_PERIOD = 1.0
BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 5},
            {"type": "Pods", "value": 4, "periodSeconds": 5},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 15,
        "selectPolicy": "Min",
        "policies": [{"type": "Percent", "value": 50, "periodSeconds": 10}],
    },
}


def queue_spec(signal: str) -> dict[str, Any]:
    return {
        "functions": ["autoscale_tasks.work"],
        "concurrency": 4,
        "job_timeout": 30,
        "autoscaling": {
            "min_replicas": 1,
            "max_replicas": 10,
            "metrics": [signal],
            "target_per_replica": 20,
            "target_oldest_waiting_seconds": 10,
            "target_wait_seconds": 10,
        },
    }


def schedule(seed: int = 17) -> list[tuple[float, str, float]]:
    """(offset seconds, kind, service seconds) of every job, the same for every signal."""
    rng = random.Random(seed)
    jobs: list[tuple[float, str, float]] = []
    for kind, rate, service in (("fast", STEADY_FAST_PER_S, FAST_S), ("slow", STEADY_SLOW_PER_S, SLOW_S)):
        t = rng.expovariate(rate)
        while t < DURATION:
            jobs.append((t, kind, service))
            t += rng.expovariate(rate)
    jobs += [(BURST_AT, "burst", FAST_S)] * BURST_JOBS
    jobs += [(WAVE_AT, "wave", SLOW_S)] * WAVE_JOBS
    return sorted(jobs)


@dataclass
class Result:
    signal: str
    jobs: int
    done: int
    each_once: bool  # every job of the plan finished, none twice
    burst_drain_s: float
    wave_drain_s: float
    p95_wait_s: float
    max_wait_s: float
    worker_seconds: float
    replica_changes: int
    reversals: int
    peak_workers: int


async def run_signal(signal: str, redis_url: str, workdir: Path, verbose: bool) -> Result:
    queues = {"bench": queue_spec(signal)}
    specs = parse_queues({"queues": queues})
    qfile = workdir / f"queues-{signal}.yaml"
    qfile.write_text(yaml.safe_dump({"queues": queues}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {"REDIS_URL": redis_url, "ARQSCALE_QUEUES_FILE": str(qfile), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")])
    redis = Redis.from_url(redis_url)
    await redis.flushall()
    options = ExporterOptions(host="127.0.0.1", port=0, api_port=0, refresh_seconds=1.0)
    exporter = Exporter(Redis.from_url(redis_url), specs, options)
    exporter.cache.wait_target = WaitTargetTracker(specs, smoothing_seconds=10, hold_seconds=5)
    await exporter.start()
    pool = WorkerPool("bench", env=env, log_dir=workdir / f"logs-{signal}")
    hpa = hpa_mod.from_spec(specs["bench"], BEHAVIOR)
    producer = Producer(redis, specs)
    plan = schedule()
    alive_seconds = 0.0
    try:
        async with MetricsClient(MetricsApi(f"https://127.0.0.1:{exporter.api_port}", insecure=True)) as client:
            say = (lambda c: print(f"  {signal}: {describe(c)}", flush=True)) if verbose else (lambda c: None)
            scaler = Autoscaler(hpa, pool, client, SYNC_PERIOD, on_change=say)
            stop = asyncio.Event()
            loop_task = asyncio.create_task(scaler.run(stop))
            while pool.ready_count() < 1:
                await pool.probe()
                await asyncio.sleep(0.2)
            start = time.monotonic()
            feeder = asyncio.create_task(feed(producer, plan, start))
            last = time.monotonic()
            settle_deadline = start + DURATION + 240
            while time.monotonic() < settle_deadline:
                await asyncio.sleep(0.5)
                now = time.monotonic()
                alive_seconds += len([w for w in pool.workers if w.alive()]) * (now - last)
                last = now
                done = await redis.llen(DONE_KEY)
                if (
                    feeder.done()
                    and done >= len(plan)
                    and scaler.spec_replicas == hpa.min_replicas
                    and not pool.draining()
                ):
                    break
            stop.set()
            await loop_task
            await feeder
    finally:
        await pool.stop_all(40)
        await exporter.stop()
    lines = [json.loads(x) for x in await redis.lrange(DONE_KEY, 0, -1)]
    await redis.aclose()
    waits = sorted(line["start"] - line["enq"] for line in lines)

    def drain(kind: str) -> float:
        mine = [line for line in lines if line["kind"] == kind]
        return max(line["end"] for line in mine) - min(line["enq"] for line in mine) if mine else float("nan")

    sizes = [c.after for c in scaler.changes]
    directions = [1 if c.after > c.before else -1 for c in scaler.changes]
    return Result(
        signal=signal,
        jobs=len(plan),
        done=len(lines),
        each_once=len({line["job"] for line in lines}) == len(lines) == len(plan),
        burst_drain_s=round(drain("burst"), 1),
        wave_drain_s=round(drain("wave"), 1),
        p95_wait_s=round(statistics.quantiles(waits, n=20)[-1], 2) if len(waits) > 1 else float("nan"),
        max_wait_s=round(waits[-1], 2) if waits else float("nan"),
        worker_seconds=round(alive_seconds),
        replica_changes=len(scaler.changes),
        reversals=sum(1 for a, b in itertools.pairwise(directions) if a != b),
        peak_workers=max(sizes, default=hpa.min_replicas),
    )


async def feed(producer: Producer, plan: list[tuple[float, str, float]], start: float) -> None:
    """Enqueue each job of the plan at its time; ids are the plan's index (unique: a repeated id would be
    refused as already queued, and look like a lost job)."""
    i = 0
    while i < len(plan):
        due = start + plan[i][0]
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        batch = []
        while i < len(plan) and start + plan[i][0] <= time.monotonic() + 0.001:
            batch.append(plan[i])
            i += 1
        now = time.time()
        for n, (_, kind, service) in enumerate(batch, start=i - len(batch)):
            await producer.enqueue("bench", "work", now, service, kind, job_id=f"{kind}-{n:05d}")


def table(results: list[Result]) -> str:
    head = ("signal", "burst drained (s)", "slow wave drained (s)", "p95 wait (s)", "max wait (s)", "worker-seconds",
            "replica changes", "reversals", "peak workers")  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = (r.signal, r.burst_drain_s, r.wave_drain_s, r.p95_wait_s, r.max_wait_s, r.worker_seconds,
                 r.replica_changes, r.reversals, r.peak_workers)  # fmt: skip
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(rows)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", default=",".join(SIGNALS))
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    parser.add_argument("--quiet", action="store_true", help="do not print each replica change")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = await asyncio.create_subprocess_exec(
            default_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", tmp, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.sleep(0.5)
            results = []
            for signal in args.signals.split(","):
                print(
                    f"{signal}: running ({len(schedule())} jobs over {DURATION:g}s, then drain and scale-down)",
                    flush=True,
                )
                result = await run_signal(signal, f"redis://127.0.0.1:{port}/0", Path(tmp), not args.quiet)
                print(f"{signal}: {result}", flush=True)
                results.append(result)
        finally:
            server.terminate()
            with contextlib.suppress(ProcessLookupError):
                await server.wait()
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps([r.__dict__ for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
