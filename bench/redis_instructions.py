"""What each no-op job costs Redis in CPU instructions: this checkout against an earlier commit, counted exactly.

    python bench/redis_instructions.py                        # against 9b0e312 (before session 11), events on
    python bench/redis_instructions.py --baseline 9c66859 --n 2000 --events off --top 25
    python bench/redis_instructions.py --split --batch 1 --n 500  # per call: enqueue, pickup, finish apart

Redis' CPU time per job (bench/redis_cost.py, bench/run.py) moves by a third between runs on a shared machine;
the instructions Redis executes for the same work do not. Each version gets its own redis-server run under
valgrind's callgrind (``--redis-server``: a build with symbols names the functions, any build gives the totals).
A child process in that version's source tree enqueues ``--n`` no-op jobs (batches of 100), then takes and
finishes them as a worker at concurrency 100 does (pickups of 100, one finish call each, the ownership record
sent back with each outcome where the version has one). The instruction counter is zeroed after the enqueue
and read after the last finish, so the figure is the run phase alone; it is run twice and the second pass is
reported (the first compiles the scripts and grows Redis' tables). With ``--top``, the functions that differ
most between the versions (self instructions per job). Cache misses are not counted: a big keyspace costs
more time than its instructions say.

``--batch N`` sets the jobs per enqueue, pickup and finish call (100: a worker at concurrency 100 under a backlog;
1: a steady trickle, where each call's fixed cost is the job's). ``--split`` counts the three phases apart: all the
enqueues (``enqueue_many`` of N), then all the pickups, then all the finishes, each phase's count per job.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from redis_cost import source_tree, success  # bench/ is sys.path[0] when run as a script
from run import ROOT, default_redis_server, free_port, wait_for_redis


def child(port: int, n: int, events: bool, server_pid: int, batch: int = 100, split: bool = False) -> None:
    """Runs inside one version's source tree: enqueue, zero the counter, run ``n`` jobs, dump the counter (with
    ``split``: zero, enqueue, dump, take every job, dump, finish them, dump)."""
    from redis.asyncio import Redis

    from arqscale.core.models import JobRequest
    from arqscale.core.producer import Producer
    from arqscale.core.spec import parse_queues
    from arqscale.worker.pickup import Finish, QueueOps

    spec = parse_queues(
        {"queues": {"bench": {"functions": ["tasks.noop"], "events": {"enabled": events}, "lease_seconds": 3600}}}
    )["bench"]
    fresh: dict[str, Any] = {"fresh": True} if "fresh" in inspect.signature(QueueOps.pickup).parameters else {}
    sync = redis.Redis(port=port)

    def control(flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(server_pid)], capture_output=True, check=True)

    async def go() -> None:
        client = Redis(port=port)
        producer = Producer(client, {"bench": spec})
        ops = QueueOps(client, spec, "bench-worker")
        token = 0
        for _ in range(2):
            sync.flushall()
            if split:
                control("-z")
            for _ in range(0, n, batch):
                await producer.enqueue_many("bench", [JobRequest(function="noop") for _ in range(batch)])
            control("-d" if split else "-z")
            taken = []
            while True:
                token += 1
                picked = (await ops.pickup(batch, f"bench-worker.{token}", **fresh)).jobs
                if not picked:
                    break
                if split:
                    taken.append(picked)
                else:
                    await ops.finish([success(Finish, j) for j in picked])
            if split:
                control("-d")
                for picked in taken:
                    await ops.finish([success(Finish, j) for j in picked])
            control("-d")
        await client.aclose()

    asyncio.run(go())


def totals(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def self_costs(dump: Path) -> dict[str, int]:
    """Instructions per function, its own only (``callgrind_annotate``)."""
    out = subprocess.run(
        ["callgrind_annotate", "--tree=caller", "--threshold=100", str(dump)], capture_output=True, text=True
    ).stdout
    costs: dict[str, int] = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\*\s+(\S+)", line)
        name = m.group(2) if m else ""
        # The frames every sample passes through (main, the libc start, the loader) say nothing.
        if m and not any(x in name for x in ("main", "libc_start", "below", "???:0x")):
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def measure(
    src: Path, binary: str, n: int, events: bool, workdir: Path, batch: int = 100, split: bool = False
) -> list[Path]:
    """The callgrind dumps of the second pass of ``src``'s version: the run phase, or (``split``) its enqueue,
    pickup and finish phases."""
    port = free_port()
    out = workdir / f"cg-{port}"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", binary, "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port)
        wait_for_redis(client, 30)  # valgrind starts slowly
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT / "bench")])}
        cmd = [sys.executable, __file__, "--child", str(port), str(n), "1" if events else "0", str(server.pid)]
        cmd += ["--batch", str(batch)] + (["--split"] if split else [])
        subprocess.run(cmd, env=env, check=True, cwd=ROOT / "bench", capture_output=True)
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection before it answers
    finally:
        server.wait(60)
    dumps = sorted(workdir.glob(f"cg-{port}.{server.pid}.*"), key=lambda p: int(p.suffix[1:]))
    per_pass = 3 if split else 1
    if len(dumps) < 2 * per_pass:
        raise RuntimeError("callgrind wrote fewer dumps than run phases")
    return dumps[per_pass : 2 * per_pass]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="jobs per run phase")
    parser.add_argument("--baseline", default="9b0e312", help="git commit to compare with ('' to skip)")
    parser.add_argument("--events", choices=["on", "off"], default="on")
    parser.add_argument("--redis-server", default=default_redis_server())
    parser.add_argument("--top", type=int, default=0, help="list the functions that differ most")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here (callgrind_annotate --inclusive=yes)")
    parser.add_argument("--batch", type=int, default=100, help="jobs per enqueue, pickup and finish call")
    parser.add_argument("--split", action="store_true", help="count enqueue, pickup and finish apart")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        port, n, events, pid = args.child
        child(int(port), int(n), events == "1", int(pid), args.batch, args.split)
        return 0
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("valgrind (callgrind) is needed: apt-get install valgrind", file=sys.stderr)
        return 2
    events = args.events == "on"
    phases = ["enqueue", "pickup", "finish"] if args.split else ["run"]
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"this checkout": ROOT / "src"}
        if args.baseline:
            versions[f"baseline {args.baseline}"] = source_tree(args.baseline, Path(tmp))
        dumps = {
            name: measure(src, args.redis_server, args.n, events, Path(tmp), args.batch, args.split)
            for name, src in versions.items()
        }
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name, files in dumps.items():
                for phase, dump in zip(phases, files, strict=True):
                    label = name.split()[-1].replace("/", "_")
                    shutil.copy(dump, args.keep / f"callgrind.{label}.{phase}.out")
        per_job = {name: [totals(d) / args.n for d in files] for name, files in dumps.items()}
        print(
            f"Redis instructions per no-op job ({args.n:,} jobs, {args.batch} per call, events {args.events}, "
            f"{args.redis_server}):\n"
        )
        heads = [f"{p} per job" for p in phases] + (["total"] if args.split else [])
        print("| version | " + " | ".join(heads) + " |")
        print("| --- |" + " ---: |" * len(heads))
        for name, values in per_job.items():
            cells = [f"{v:,.0f}" for v in values] + ([f"{sum(values):,.0f}"] if args.split else [])
            print(f"| {name} | " + " | ".join(cells) + " |")
        if len(per_job) == 2:
            this, base = per_job.values()
            for phase, a, b in zip(phases, this, base, strict=True):
                print(f"\n{phase}: this / baseline = {a / b:.2f}")
            if args.top:
                a_costs, b_costs = (self_costs(files[-1]) for files in dumps.values())
                rows = sorted(set(a_costs) | set(b_costs), key=lambda k: -abs(a_costs.get(k, 0) - b_costs.get(k, 0)))
                print("\n| function | this | baseline | difference |\n| --- | ---: | ---: | ---: |")
                for k in rows[: args.top]:
                    x, y = a_costs.get(k, 0) / args.n, b_costs.get(k, 0) / args.n
                    print(f"| `{k[-70:]}` | {x:,.0f} | {y:,.0f} | {x - y:+,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
