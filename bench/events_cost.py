"""What job events cost: the same no-op workload with a queue's events on and off, side by side in one run.

    python bench/events_cost.py                  # 3 rounds of 10,000 jobs per mode, rounds alternate the order
    python bench/events_cost.py --n 20000 --rounds 5

One private redis-server; each round enqueues ``--n`` no-op jobs with arqscale's producer (``enqueue_many``,
batches of 500) and runs them with one ``arqscale worker`` (concurrency 100), first with ``events.enabled``
off then on, or the other way round (alternating, so a machine that gets busier during the run does not favour
one mode). Measured per mode: worker throughput (jobs/s, timed from the first job to the empty queue), Redis'
own CPU per job while the worker ran and while the producer enqueued (from /proc), Redis commands per job, and
the stream's memory per entry. The totals hash is written in both modes (it is not optional); "off" only
drops the stream. Results go to stdout as Markdown; the medians are the figures to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis

from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.worker.pickup import Finish, QueueOps
from run import Bench, Family, System, Throughput, cpu_seconds, default_redis_server, private_redis

SYSTEM = System("arqscale-100", "arqscale", "arqscale", 100)


class EventsBench(Bench):
    """``Bench`` whose queue has events on or off, and which times the producer's Redis CPU too."""

    events = True
    fill_cpu_us_per_job = 0.0
    fill_cmds_per_job = 0.0

    def queues_file(self, concurrency: int, serializer: str = "json") -> Path:
        path = self.workdir / f"queues-{concurrency}-{serializer}-events-{self.events}.yaml"
        lines = [
            "queues:",
            "  bench:",
            "    functions: [tasks.noop, tasks.stamp]",
            f"    concurrency: {concurrency}",
            f"    serializer: {serializer}",
            f"    events: {{enabled: {str(self.events).lower()}}}",
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def client(self, family: Family, action: str, *args: str, timeout: float = 300) -> dict[str, Any]:
        before, cmds = cpu_seconds(self.redis_proc.pid), self.commands()
        result = super().client(family, action, *args, timeout=timeout)
        if action == "fill":
            n = int(args[args.index("--n") + 1])
            self.fill_cpu_us_per_job = (cpu_seconds(self.redis_proc.pid) - before) / n * 1e6
            self.fill_cmds_per_job = (self.commands() - cmds - 1) / n
        return result


def script_spec(events: bool) -> QueueSpec:
    queue = {"functions": ["tasks.noop"], "events": {"enabled": events}, "lease_seconds": 3600}
    return parse_queues({"queues": {"bench": queue}})["bench"]


def script_cost(r: redis.Redis, events: bool, n: int) -> tuple[float, float]:
    """Redis' own time per job inside the scripts (INFO commandstats, µs): enqueue, then pickup + finish."""

    async def go() -> tuple[float, float]:
        client = Redis(**r.connection_pool.connection_kwargs)
        spec = script_spec(events)
        r.flushall()
        producer, ops = Producer(client, {"bench": spec}), QueueOps(client, spec, "bench-worker")
        await producer.enqueue_many("bench", [JobRequest(function="noop")])  # scripts loaded
        r.config_resetstat()
        for start in range(0, n, 500):
            await producer.enqueue_many("bench", [JobRequest(function="noop") for _ in range(min(500, n - start))])
        enqueue_us = float(r.info("commandstats")["cmdstat_evalsha"]["usec"]) / n
        r.config_resetstat()
        for i in range(0, n + 1, 100):
            picked = (await ops.pickup(100, f"bench-worker.{i}")).jobs
            if picked:
                await ops.finish(
                    [Finish("ok", j.job_id, "", token=j.token, job_try=j.job_try, ran_ms=1) for j in picked]
                )
        work_us = float(r.info("commandstats")["cmdstat_evalsha"]["usec"]) / (n + 1)
        await client.aclose()
        return enqueue_us, work_us

    return asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="jobs per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows: dict[bool, list[tuple[Throughput, float, float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        bench = EventsBench(Path(tmp), default_redis_server())
        try:
            for r in range(args.rounds):
                for events in (False, True) if r % 2 == 0 else (True, False):
                    bench.events = events
                    result = bench.throughput(SYSTEM, args.n)
                    per_entry = 0.0
                    if events:
                        length = int(bench.r.xlen("arqscale:bench:events"))
                        per_entry = int(bench.r.memory_usage("arqscale:bench:events") or 0) / max(length, 1)
                    rows[events].append((result, bench.fill_cpu_us_per_job, bench.fill_cmds_per_job, per_entry))
                    print(
                        f"round {r + 1} events {'on ' if events else 'off'}: {result.jobs_per_s:,.0f} jobs/s, "
                        f"Redis {result.redis_cpu_us_per_job:.1f} µs/job running, "
                        f"{bench.fill_cpu_us_per_job:.1f} µs/job enqueueing",
                        file=sys.stderr,
                    )
        finally:
            bench.close()
    print(f"{args.rounds} rounds of {args.n:,} no-op jobs per mode, one worker (concurrency 100); medians:\n")
    print("| events | jobs/s | Redis CPU µs/job (worker) | Redis cmds/job (worker) | Redis CPU µs/job (enqueue) "
          "| Redis cmds/job (enqueue) | worker CPU µs/job | stream bytes/entry |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for events in (False, True):
        runs = rows[events]
        med = statistics.median
        cells = [
            "on" if events else "off",
            f"{med(t.jobs_per_s for t, *_ in runs):,.0f}",
            f"{med(t.redis_cpu_us_per_job for t, *_ in runs):.1f}",
            f"{med(t.redis_cmds_per_job for t, *_ in runs):.2f}",
            f"{med(fill_cpu for _, fill_cpu, _, _ in runs):.1f}",
            f"{med(fill_cmds for _, _, fill_cmds, _ in runs):.2f}",
            f"{med(t.worker_cpu_us_per_job for t, *_ in runs):.0f}",
            f"{med(entry for *_, entry in runs):.0f}" if events else "-",
        ]
        print("| " + " | ".join(cells) + " |")
    with private_redis() as r:
        costs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for r_i in range(args.rounds):
            for events in (False, True) if r_i % 2 == 0 else (True, False):
                costs[events].append(script_cost(r, events, args.n))
    print(f"\nRedis' own time inside the scripts per job (INFO commandstats, {args.n:,} jobs, medians):\n")
    print("| events | enqueue µs/job | pickup + finish µs/job |")
    print("| --- | --- | --- |")
    for events in (False, True):
        enq = statistics.median(e for e, _ in costs[events])
        work = statistics.median(w for _, w in costs[events])
        print(f"| {'on' if events else 'off'} | {enq:.1f} | {work:.1f} |")
    ratio = statistics.median(t.jobs_per_s for t, *_ in rows[True]) / statistics.median(
        t.jobs_per_s for t, *_ in rows[False]
    )
    print(f"\nThroughput with events on / off: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
