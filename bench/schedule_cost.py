"""What schedules cost a queue's workers and Redis: Redis commands per second of one idle worker, without
schedules, with many schedules far off, and with schedules that tick every second.

    python bench/schedule_cost.py                      # 0, 1,000 far-off, 10 and 100 ticking each second
    python bench/schedule_cost.py --seconds 30 --far 10000 --ticking 10 100 500

One private redis-server on a free loopback port and one real ``arqscale worker`` process, no jobs
enqueued by hand. Each row: the schedules are written as declarations in the queues file (the worker
syncs them at start-up), the worker starts, settles for 3 s, then Redis counts what it served during
``--seconds`` (INFO commandstats, less this script's own INFO calls; commands run inside scripts count too).
``EVALSHA us`` is Redis' own time per script call (pickup, heartbeat, DUE and FIRE together). The queue is
paused, so the worker runs none of the jobs the schedules enqueue: running them costs what any job costs
(docs/benchmarks.md), and every row has the same idle pickups. Results go to stdout as Markdown.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from run import ROOT, default_redis_server, free_port  # bench/ is sys.path[0] when run as a script

BENCH = Path(__file__).resolve().parent


def queues(far: int, ticking: int) -> dict[str, Any]:
    schedules: dict[str, Any] = {f"far{i}": {"cron": "0 3 1 1 *", "function": "noop"} for i in range(far)}
    schedules |= {f"tick{i}": {"every": 1, "function": "noop"} for i in range(ticking)}
    return {"queues": {"bench": {"functions": ["tasks.noop"], "schedules": schedules}}}


def stats(r: redis.Redis) -> tuple[int, dict[str, int], int, int]:
    info = r.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}
    evalsha = info.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return sum(calls.values()), calls, int(evalsha["calls"]), int(evalsha["usec"])


def measure(server: str, workdir: Path, far: int, ticking: int, seconds: float) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    qfile = workdir / "queues.yaml"
    qfile.write_text(yaml.safe_dump(queues(far, ticking)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "ARQSCALE_QUEUES_FILE": str(qfile),
        "ARQSCALE_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(BENCH),
    }
    r = redis.Redis(port=port)
    worker = None
    try:
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        worker = subprocess.Popen(
            [sys.executable, "-m", "arqscale", "worker", "--queue", "bench", "--port", str(free_port())],
            env=env,
            cwd=ROOT,
        )
        # The queue is paused: the worker runs none of the enqueued jobs, so every row pays the same idle
        # pickups and the differences are the schedules' own cost.
        r.set("arqscale:bench:paused", "1")
        deadline = time.monotonic() + 120
        while r.zcard("arqscale:bench:schedules:next") < far + ticking and time.monotonic() < deadline:
            time.sleep(0.1)  # start-up and the sync of the declarations
        time.sleep(2.0)
        total0, calls0, ev0, us0 = stats(r)
        t0 = time.monotonic()
        time.sleep(seconds)
        total1, calls1, ev1, us1 = stats(r)
        elapsed = time.monotonic() - t0
        own = 1  # this script's second INFO (the first was counted before t0)
        return {
            "commands_per_s": (total1 - total0 - own) / elapsed,
            "evalsha_per_s": (ev1 - ev0) / elapsed,
            "evalsha_us": (us1 - us0) / max(ev1 - ev0, 1),
            "jobs_per_s": (calls1.get("psetex", 0) - calls0.get("psetex", 0)) / elapsed,
        }
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement")
    parser.add_argument("--far", type=int, default=1000, help="far-off schedules in the idle row")
    parser.add_argument("--ticking", type=int, nargs="*", default=[10, 100], help="schedules ticking each second")
    args = parser.parse_args()
    server = default_redis_server()
    rows = [("none", 0, 0), (f"{args.far} far off", args.far, 0)]
    rows += [(f"{n} every second", 0, n) for n in args.ticking]
    print("| schedules | Redis commands/s | script calls/s | EVALSHA us | jobs enqueued/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, far, ticking in rows:
        with tempfile.TemporaryDirectory() as tmp:
            m = measure(server, Path(tmp), far, ticking, args.seconds)
        print(
            f"| {label} | {m['commands_per_s']:.2f} | {m['evalsha_per_s']:.2f} | {m['evalsha_us']:.1f} "
            f"| {m['jobs_per_s']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
