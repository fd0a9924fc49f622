"""End to end: enqueue-to-completion latency under a steady load, two worker processes.

    python bench/end_to_end.py                                   # 5,000 jobs/s for 10 s, two workers
    python bench/end_to_end.py --rate 5000 --seconds 10 --json e2e.json
    python bench/end_to_end.py --baseline 0f238ea                # also that commit's worker, same run

One private redis-server. For each version (this checkout, and ``--baseline`` read from git into a temporary
directory), in turn: two ``arqscale worker`` processes on one queue (``--concurrency`` each) are started and
awaited (``/readyz``), then an open-loop producer (a child process using that version's ``Producer``) enqueues
no-op jobs at a fixed rate: every millisecond it sends the jobs that fell due since the last send, in one
``enqueue_many``, whatever the workers are doing (jobs due while a send is in flight go in the next one). Each
job's send time is the wall clock just before its ``enqueue_many``.

Two latencies per job, both from its send time:

- **completed**: until its outcome is written in Redis, the id of its ``completed`` event (Redis' clock on the
  same machine, milliseconds: a figure may be up to 1 ms low). This is what a client waiting for the result sees.
- **task ended**: until its task returned in the worker (``tasks.e2e`` notes ``time.time()``, microseconds);
  the difference with the first is the outcome's wait for its finish call.

Jobs sent in the first ``--warmup`` seconds are left out. Reported: p50, p99, max, the achieved send rate, the
rate jobs completed at, Redis' CPU and the workers' CPU per job, the machine's load. ``--json FILE`` writes the
same as JSON (a list, one object per version) for a full-run driver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from redis_cost import command_calls, delta, source_tree
from run import Bench, BenchError, cpu_seconds, default_redis_server, free_port, stop, tail

QUEUE = "e2e"
E2E_KEY = "bench:e2e:done"  # tasks.E2E_KEY
MAX_BATCH = 500


def queues_file(path: Path, concurrency: int) -> Path:
    # Events kept for the whole run: the `completed` events are the completion times read afterwards.
    path.write_text(
        f"queues:\n  {QUEUE}:\n    functions: [tasks.e2e]\n    concurrency: {concurrency}\n"
        "    events: {max_len: 10000000}\n"
    )
    return path


# ----------------------------------------------------------------------------- the producer (child process)


def produce(url: str, queues: Path, rate: float, seconds: float) -> dict[str, Any]:
    """Runs inside one version's source tree: send ``rate`` jobs/s for ``seconds``, open loop."""
    import uvloop
    from redis.asyncio import Redis

    from arqscale.core.models import JobRequest
    from arqscale.core.producer import Producer
    from arqscale.core.spec import load_queues

    async def go() -> dict[str, Any]:
        redis = Redis.from_url(url)
        producer = Producer(redis, load_queues(queues))
        await producer.enqueue_many(QUEUE, [JobRequest(function="e2e", job_id="warm")])  # script loaded
        sent: list[float] = []
        lag: list[float] = []
        total = int(rate * seconds)
        start = time.monotonic()
        while len(sent) < total:
            elapsed = time.monotonic() - start
            due = min(int(elapsed * rate) + 1, total)
            if due <= len(sent):
                await asyncio.sleep(max(len(sent) / rate - elapsed, 0))
                continue
            first = len(sent)
            n = min(due - first, MAX_BATCH)
            wall = time.time()
            lag.append(elapsed - first / rate)  # how late the oldest job of this send is against the schedule
            await producer.enqueue_many(QUEUE, [JobRequest(function="e2e", job_id=f"e{first + i}") for i in range(n)])
            sent += [wall] * n
        took = time.monotonic() - start
        await redis.aclose()
        lag.sort()
        return {
            "sent": sent,
            "send_rate": len(sent) / took,
            "sends": len(lag),
            "lag_p99_ms": lag[int(len(lag) * 0.99)] * 1000 if lag else 0.0,
        }

    return uvloop.run(go())


# ----------------------------------------------------------------------------- the harness


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"worker exited with {proc.returncode}:\n{tail(log)}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.05)
    raise BenchError(f"worker not ready after {timeout} s:\n{tail(log)}")


def completed_ms(bench: Bench) -> dict[str, int]:
    """Job id -> ms of its ``completed`` event (the stream id's time part; a batched entry holds several)."""
    from arqscale.core.events import split_entry

    out: dict[str, int] = {}
    after = "-"
    while True:
        entries = bench.r.xrange(f"arqscale:{QUEUE}:events", after, "+", count=20_000)
        if not entries:
            return out
        for entry_id, fields in entries:
            if fields.get(b"event") == b"completed":
                for event_id, one in split_entry(entry_id, fields):
                    job = one["job"] if "job" in one else one[b"job"]
                    out[job.decode() if isinstance(job, bytes) else job] = int(event_id.split("-")[0])
        after = "(" + entries[-1][0].decode()


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    s = sorted(values)
    return {"p50": statistics.median(s), "p99": s[min(int(len(s) * 0.99), len(s) - 1)], "max": s[-1]}


def one_run(bench: Bench, label: str, src: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    bench.r.flushall()
    qfile = queues_file(bench.workdir / "e2e-queues.yaml", args.concurrency)
    env = dict(bench.env)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env["PYTHONPATH"]])
    env.update(REDIS_URL=bench.url, ARQSCALE_QUEUES_FILE=str(qfile))
    workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    spies: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(args.workers):
            port = free_port()
            log = bench.workdir / f"e2e-{label.replace(' ', '_')}-{n}.log"
            cmd = [sys.executable, "-m", "arqscale", "worker", "--queue", QUEUE]
            proc = subprocess.Popen(
                cmd, env={**env, "ARQSCALE_WORKER_PORT": str(port)}, stdout=log.open("wb"), stderr=subprocess.STDOUT
            )
            workers.append((proc, log))
            wait_ready(port, proc, log)
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                out = args.profile / f"e2e-{label.replace(' ', '_')}-{n}.txt"
                spy = ["py-spy", "record", "--pid", str(proc.pid), "--rate", "250", "--format", "raw", "--output"]
                spies.append(subprocess.Popen([*spy, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        info = bench.r.info("cpu")
        redis_cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        worker_cpu = sum(cpu_seconds(p.pid) for p, _ in workers)
        calls = command_calls(bench.r)
        cmd = [sys.executable, __file__, "--produce", bench.url, str(qfile), str(args.rate), str(args.seconds)]
        done = subprocess.run(cmd, env=env, capture_output=True, check=False, cwd=Path(__file__).parent)
        if done.returncode != 0:
            raise BenchError(f"producer failed: {done.stderr.decode(errors='replace')[-800:]}")
        produced = json.loads(done.stdout)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the backlog, if any, runs out
            if bench.r.zcard(f"arq:queue:{QUEUE}") == 0 and bench.r.zcard(f"arqscale:{QUEUE}:active") == 0:
                break
            time.sleep(0.05)
        info = bench.r.info("cpu")
        redis_cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) - redis_cpu
        worker_cpu = sum(cpu_seconds(p.pid) for p, _ in workers) - worker_cpu
        calls = delta(calls, command_calls(bench.r))
        time.sleep(0.2)  # the tasks' last notes flushed
    finally:
        for proc, _ in workers:
            stop(proc)
        for spy in spies:
            spy.wait(30)
    result = summarize(bench, label, args, produced, redis_cpu, worker_cpu)
    jobs = max(result["jobs"], 1)
    # Script calls (enqueues, pickups, finishes, heartbeats) and every command run, scripts' own included.
    result["script_calls_per_job"] = sum(calls.get(k, (0, 0.0))[0] for k in ("evalsha", "fcall")) / jobs
    result["commands_per_job"] = sum(c for k, (c, _) in calls.items() if k != "info") / jobs
    return result


def summarize(
    bench: Bench, label: str, args: argparse.Namespace, produced: dict[str, Any], redis_cpu: float, worker_cpu: float
) -> dict[str, Any]:
    sent: list[float] = produced["sent"]
    finished = completed_ms(bench)
    ended = {}
    for raw in bench.r.lrange(E2E_KEY, 0, -1):
        job, at = raw.decode().split()
        ended[job] = float(at)
    skip = int(args.warmup * args.rate)
    to_completed, to_ended = [], []
    for i, t in enumerate(sent):
        if i < skip:
            continue
        job = f"e{i}"
        if job in finished:
            to_completed.append(finished[job] - t * 1000)
        if job in ended:
            to_ended.append((ended[job] - t) * 1000)
    finish_times = sorted(finished[f"e{i}"] for i in range(len(sent)) if f"e{i}" in finished)
    span = (finish_times[-1] - finish_times[0]) / 1000 if len(finish_times) > 1 else float("nan")
    return {
        "version": label,
        "rate_target": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "jobs": len(sent),
        "measured": len(to_completed),
        "missing": len(sent) - sum(1 for i in range(len(sent)) if f"e{i}" in finished),
        "send_rate": produced["send_rate"],
        "done_rate": len(finish_times) / span if span else float("nan"),
        "send_lag_p99_ms": produced["lag_p99_ms"],
        "completed_ms": quantiles(to_completed),
        "task_ended_ms": quantiles(to_ended),
        "redis_cpu_us_per_job": redis_cpu / max(len(sent), 1) * 1e6,
        "worker_cpu_us_per_job": worker_cpu / max(len(sent), 1) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5000, help="jobs per second sent")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1, help="seconds of jobs left out at the start")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100, help="each worker's")
    parser.add_argument("--baseline", default="", help="also arqscale's worker and producer as of this git commit")
    parser.add_argument("--rounds", type=int, default=1, help="runs per version, alternating")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--profile", type=Path, help="py-spy samples of each worker, into this directory")
    parser.add_argument("--produce", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.produce:
        url, queues, rate, seconds = args.produce
        print(json.dumps(produce(url, Path(queues), float(rate), float(seconds))))
        return 0
    results: list[dict[str, Any]] = []
    load = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory() as tmp:
        versions: list[tuple[str, Path | None]] = [("this checkout", None)]
        if args.baseline:
            versions.append((f"baseline {args.baseline}", source_tree(args.baseline, Path(tmp) / "base")))
        bench = Bench(Path(tmp), default_redis_server())
        try:
            for rnd in range(args.rounds):
                for label, src in versions if rnd % 2 == 0 else list(reversed(versions)):
                    result = one_run(bench, label, src, args)
                    result["round"] = rnd + 1
                    results.append(result)
                    c = result["completed_ms"]
                    print(f"round {rnd + 1} {label}: completed p50 {c['p50']:.2f} ms p99 {c['p99']:.2f} ms",
                          file=sys.stderr)  # fmt: skip
        finally:
            bench.close()
    load_end = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"{args.workers} workers at concurrency {args.concurrency}, {args.rate:g} jobs/s for {args.seconds:g} s "
        f"(first {args.warmup:g} s left out); load average {' '.join(load)} at start, {' '.join(load_end)} at end\n"
    )
    print("| version | sent jobs/s | completed jobs/s | completed p50 / p99 / max ms | task ended p50 / p99 / max ms "
          "| Redis CPU µs/job | workers' CPU µs/job | script calls / commands per job |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        c, e = r["completed_ms"], r["task_ended_ms"]
        print(
            f"| {r['version']} | {r['send_rate']:,.0f} | {r['done_rate']:,.0f} "
            f"| {c['p50']:.2f} / {c['p99']:.2f} / {c['max']:.2f} | {e['p50']:.2f} / {e['p99']:.2f} / {e['max']:.2f} "
            f"| {r['redis_cpu_us_per_job']:.1f} | {r['worker_cpu_us_per_job']:.1f} "
            f"| {r['script_calls_per_job']:.2f} / {r['commands_per_job']:.1f} |"
        )
    if args.json:
        meta = {"load_start": load, "load_end": load_end}
        args.json.write_text(json.dumps([{**r, **meta} for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
