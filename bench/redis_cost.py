"""What each no-op job costs Redis: this checkout's scripts against an earlier commit's, side by side in one run.

    python bench/redis_cost.py                          # against 9c66859 (before issue 16), events on and off
    python bench/redis_cost.py --baseline 9c66859 --n 5000 --rounds 5

One private redis-server. Each round runs, for every version (this checkout, and ``--baseline`` read from git
into a temporary directory) and both event settings, one child process on a fresh queue: it enqueues ``--n``
no-op jobs with that version's ``Producer.enqueue_many`` (batches of 100), then takes and finishes them with
that version's ``QueueOps`` (pickup of 100, then one finish call for the 100), as a worker at concurrency 100
does. The child reads Redis' own CPU (``INFO cpu``, user + sys) and ``INFO commandstats`` before and after each
phase, so the figures are Redis' work only, free of the client's. The versions run in turns within each round
(the order alternating), so a machine whose load changes affects them alike. Medians over the rounds.
Results go to stdout as Markdown, with the commands each job costs inside the scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

import redis

from run import ROOT, private_redis  # bench/ is sys.path[0] when run as a script

BATCH = 100
# What the worker stores for a no-op job's result (arq's result format, JSON queue): about this size.
RESULT = (
    b'{"t":1,"f":"noop","a":[],"k":{},"et":1764864000000,"s":true,"r":null,"st":1764864000001,'
    b'"ft":1764864000001,"q":"bench"}'
)


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_calls(r: redis.Redis) -> dict[str, tuple[int, float]]:
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"])) for k, v in r.info("commandstats").items()}


def script_usec(calls: dict[str, tuple[int, float]]) -> float:
    """µs Redis spent in script calls: EVALSHA, or FCALL where the worker's scripts go by Redis Functions."""
    return sum(calls.get(name, (0, 0.0))[1] for name in ("evalsha", "fcall"))


def delta(before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
    """Calls and µs per command between two ``command_calls`` (commands run inside scripts count too)."""
    zero = (0, 0.0)
    return {
        k: (c - before.get(k, zero)[0], u - before.get(k, zero)[1])
        for k, (c, u) in after.items()
        if c != before.get(k, zero)[0]
    }


def success(finish: Any, job: Any) -> Any:
    """A no-op job's success record, ``finish`` being the version's ``Finish``: with the ownership record its job
    was taken under, as the worker sends it (versions that have one; earlier ones send the token)."""
    held: dict[str, Any] = {"held": job.record} if "held" in inspect.signature(finish).parameters else {}
    return finish("ok", job.job_id, RESULT, token=job.token, job_try=job.job_try, ran_ms=1, **held)


def child(port: int, queue: str, n: int, events: bool) -> dict[str, Any]:
    """Runs inside one version's source tree: enqueue then run ``n`` jobs, Redis' cost of each phase."""
    from redis.asyncio import Redis

    from arqscale.core.models import JobRequest
    from arqscale.core.producer import Producer
    from arqscale.core.spec import parse_queues
    from arqscale.worker.pickup import Finish, QueueOps

    spec = parse_queues(
        {"queues": {queue: {"functions": ["tasks.noop"], "events": {"enabled": events}, "lease_seconds": 3600}}}
    )[queue]
    r = redis.Redis(port=port)

    async def go() -> dict[str, Any]:
        client = Redis(port=port)
        producer = Producer(client, {queue: spec})
        ops = QueueOps(client, spec, "bench-worker")
        # Each pickup with a token never sent before, as the worker's are (versions that can tell it).
        fresh: dict[str, Any] = {"fresh": True} if "fresh" in inspect.signature(ops.pickup).parameters else {}

        # Scripts loaded and connections open before the clock starts.
        await producer.enqueue_many(queue, [JobRequest(function="noop")])
        first = (await ops.pickup(1, "bench-worker.0")).jobs
        await ops.finish([success(Finish, j) for j in first])
        out: dict[str, Any] = {}
        cpu, calls = redis_cpu(r), command_calls(r)
        for _ in range(0, n, BATCH):
            await producer.enqueue_many(queue, [JobRequest(function="noop") for _ in range(BATCH)])
        cpu2, calls2 = redis_cpu(r), command_calls(r)
        out["enqueue_cpu_us"] = (cpu2 - cpu) / n * 1e6
        out["enqueue_usec"] = (script_usec(calls2) - script_usec(calls)) / n
        out["enqueue_cmds"] = delta(calls, calls2)
        i = 0
        while True:
            i += 1
            picked = (await ops.pickup(BATCH, f"bench-worker.{i}", **fresh)).jobs
            if not picked:
                break
            await ops.finish([success(Finish, j) for j in picked])
        cpu3, calls3 = redis_cpu(r), command_calls(r)
        out["run_cpu_us"] = (cpu3 - cpu2) / n * 1e6
        out["run_usec"] = (script_usec(calls3) - script_usec(calls2)) / n
        out["run_cmds"] = delta(calls2, calls3)
        await client.aclose()
        return out

    return asyncio.run(go())


def source_tree(commit: str, into: Path) -> Path:
    """``src/`` of ``commit``, unpacked into ``into``."""
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_child(src: Path, port: int, queue: str, n: int, events: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT / "bench")])}
    cmd = [sys.executable, __file__, "--child", str(port), queue, str(n), "1" if events else "0"]
    done = subprocess.run(cmd, env=env, capture_output=True, check=True, cwd=ROOT / "bench")
    return dict(json.loads(done.stdout))


def per_job(cmds: dict[str, tuple[int, float]], n: int) -> str:
    """Commands per job inside the scripts, each with its own µs per job (commandstats)."""
    calls = ("evalsha", "fcall", "function|load", "info")  # the script calls themselves, the library's load, ours
    inner = {k: (c / n, u / n) for k, (c, u) in sorted(cmds.items()) if k not in calls and c / n >= 0.05}
    total = sum(c for c, _ in inner.values())
    return f"{total:.1f}: " + ", ".join(f"{k} {c:.2f} ({u:.1f} µs)" for k, (c, u) in inner.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="jobs per version, setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="9c66859", help="git commit to compare with ('' to skip)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        port, queue, n, events = args.child
        print(json.dumps(child(int(port), queue, int(n), events == "1")))
        return 0
    versions: dict[str, Path] = {"this checkout": ROOT / "src"}
    with tempfile.TemporaryDirectory() as tmp, private_redis() as r:
        if args.baseline:
            versions[f"baseline {args.baseline}"] = source_tree(args.baseline, Path(tmp))
        port = int(r.connection_pool.connection_kwargs["port"])
        runs: dict[tuple[str, bool], list[dict[str, Any]]] = {}
        load = os.getloadavg()
        for rnd in range(args.rounds):
            order = list(versions) if rnd % 2 == 0 else list(reversed(versions))
            for name in order:
                for events in (True, False) if rnd % 2 == 0 else (False, True):
                    r.flushall()
                    result = run_child(versions[name], port, "bench", args.n, events)
                    runs.setdefault((name, events), []).append(result)
                    print(
                        f"round {rnd + 1} {name} events {'on' if events else 'off'}: run "
                        f"{result['run_cpu_us']:.1f} µs/job, enqueue {result['enqueue_cpu_us']:.1f} µs/job",
                        file=sys.stderr,
                    )
        load_end = os.getloadavg()
    med = statistics.median
    print(f"{args.rounds} rounds of {args.n:,} no-op jobs per version and setting; load average "
          f"{load[0]:.1f} at start, {load_end[0]:.1f} at end; medians:\n")  # fmt: skip
    print("| version | events | Redis CPU µs/job, pickup + finish (best) | script µs/job, pickup + finish "
          "| Redis CPU µs/job, enqueue | commands/job inside the pickup + finish scripts |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for (name, events), rs in runs.items():
        print(
            f"| {name} | {'on' if events else 'off'} | {med(x['run_cpu_us'] for x in rs):.1f} "
            f"({min(x['run_cpu_us'] for x in rs):.1f}) "
            f"| {med(x['run_usec'] for x in rs):.1f} | {med(x['enqueue_cpu_us'] for x in rs):.1f} "
            f"| {per_job(rs[-1]['run_cmds'], args.n)} |"
        )
    if len(versions) == 2:
        this, base = list(versions)
        for events in (True, False):
            for label, pick in (("median", med), ("best", min)):
                a = pick(x["run_cpu_us"] for x in runs[(this, events)])
                b = pick(x["run_cpu_us"] for x in runs[(base, events)])
                print(
                    f"events {'on' if events else 'off'}: Redis CPU per job run, this / baseline ({label}) "
                    f"= {a / b:.2f}"
                )
            sa = med(x["run_usec"] for x in runs[(this, events)])
            sb = med(x["run_usec"] for x in runs[(base, events)])
            print(
                f"events {'on' if events else 'off'}: script time per job run, this / baseline (median) = {sa / sb:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
