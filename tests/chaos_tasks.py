"""The chaos workload and the harness that runs it (tests/system/test_chaos.py, bench/soak.py).

The task, ``chaos_tasks.record``, writes every run it makes into Redis: ``HINCRBY chaos:runs <id> 1``
and an ``s`` event (job, worker pid, time, try) when it starts, an ``e`` event when its body ends.
Workers import it as ``chaos_tasks.record`` with ``tests/`` on ``PYTHONPATH``.

The harness starts a private redis-server with AOF, real ``arqscale worker`` subprocesses (and the
exporter when it exists), enqueues jobs with ``arqscale.core.producer.Producer`` at a steady pace and,
meanwhile, SIGTERMs (drain) and SIGKILLs random workers, starts new ones, and restarts Redis. Then it
reads the run log back and accounts for every run: each rerun of a job must be explained by a
SIGKILL of the worker that ran the previous try, by a drain that cut it short, or by the Redis outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

TESTS_DIR = Path(__file__).resolve().parent
RUNS_KEY = "chaos:runs"
EVENTS_KEY = "chaos:events"
QUEUE = "chaos"
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError)


# --------------------------------------------------------------------------------------------- tasks


async def _retry_while_redis_is_down(op: Callable[[], Coroutine[Any, Any, Any]], budget: float = 4.0) -> None:
    """The measurement must not fail a job: retry a record through a short Redis outage."""
    deadline = time.monotonic() + budget
    while True:
        try:
            await op()
            return
        except REDIS_DOWN:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


# Each record is written once even when it is sent twice: a record whose reply was lost to a Redis restart
# (executed, then the connection dropped) is retried, and without this guard the run log showed one run as
# two, which read as a rerun caused by the outage (it was the harness, not the worker).
RECORD_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 3600) then
  if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[2], ARGV[3], 1) end
  redis.call('RPUSH', KEYS[3], ARGV[1])
end
"""


async def _record_once(redis: Redis, entry: str, job_id: str, counts: bool) -> None:
    once = f"chaos:once:{entry}"
    await _retry_while_redis_is_down(
        lambda: redis.eval(RECORD_ONCE, 3, once, RUNS_KEY, EVENTS_KEY, entry, "1" if counts else "0", job_id)
    )


async def record(ctx: dict[str, Any], sleep_ms: int = 5) -> int:
    """Record this run, sleep ``sleep_ms``, record the end; returns the worker's pid."""
    redis: Redis = ctx["redis"]
    job_id: str = ctx["job_id"]
    pid = os.getpid()
    await _record_once(redis, f"s {job_id} {pid} {time.time():.6f} {ctx.get('job_try', 0)}", job_id, counts=True)
    await asyncio.sleep(sleep_ms / 1000)
    await _record_once(redis, f"e {job_id} {pid} {time.time():.6f} {ctx.get('job_try', 0)}", job_id, counts=False)
    return pid


async def fail_always(ctx: dict[str, Any]) -> None:
    """A poison job: raises on every try."""
    raise RuntimeError(f"poison job {ctx['job_id']} fails on every try")


async def fixable(ctx: dict[str, Any]) -> str:
    """Fails until the key ``chaos:fixed`` exists: the bug an operator fixes before ``dlq requeue``."""
    if not await ctx["redis"].exists("chaos:fixed"):
        raise RuntimeError("the bug is not fixed yet")
    return "fixed"


async def echo(ctx: dict[str, Any], value: Any = None) -> dict[str, Any]:
    """A trivial job for connection tests: returns what it got and the job id."""
    return {"job_id": ctx["job_id"], "value": value}


# ------------------------------------------------------------------------------------ processes


def free_port() -> int:
    from redis_server import free_port as _free_port

    return _free_port()


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without any REDIS_* / ARQSCALE_* variable, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH", "")]))
    env.update(overrides)
    return env


def write_queues_file(path: Path, queues: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"queues": queues}, sort_keys=False))
    return path


def command_exists(name: str) -> bool:
    """Whether ``arqscale <name>`` has landed (its module under arqscale.cli exists)."""
    import importlib.util

    return importlib.util.find_spec(f"arqscale.cli.{name}") is not None


class ArqscaleProcess:
    """One ``arqscale ...`` subprocess with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.port = port
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "arqscale", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.started = time.time()
        self.terminated_at: float | None = None
        self.killed_at: float | None = None
        self.exited_at: float | None = None
        self._ready = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def is_ready(self) -> bool:
        """Whether its ``/readyz`` has answered 200 (start-up done); asked until it has, then remembered."""
        if not self._ready and self.port is not None and self.alive() and self.terminated_at is None:
            self._ready = http_get(self.url("/readyz"), timeout=0.3)[0] == 200
        return self._ready and self.alive() and self.terminated_at is None

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and self.exited_at is None:
            self.exited_at = time.time()
        return code

    def terminate(self) -> None:
        """SIGTERM once (a second one means "stop now" to a worker); a thread notes when it exits."""
        if self.alive() and self.terminated_at is None:
            self.terminated_at = time.time()
            self.proc.send_signal(signal.SIGTERM)
            threading.Thread(target=self._note_exit, daemon=True).start()

    def _note_exit(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(120)
            self.exited_at = time.time()

    def kill(self) -> None:
        if self.alive():
            self.killed_at = time.time()
            self.proc.kill()

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self.poll()
        return code

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
        self.terminate()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.wait(5)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.alive():
            self.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._log.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_http(self, path: str, timeout: float = 20, want: int = 200) -> str:
        """Poll ``path`` on the process's port until it answers ``want``; returns the body."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"`arqscale {' '.join(self.args)}` exited {self.poll()}:\n{self.output()[-3000:]}")
            status, body = http_get(self.url(path))
            if status == want:
                return body
            last = f"{status} {body[:200]}"
            time.sleep(0.1)
        raise AssertionError(f"{self.url(path)} did not answer {want} within {timeout}s (last: {last})")


def http_get(url: str, timeout: float = 2, headers: dict[str, str] | None = None) -> tuple[int, str]:
    return http_request("GET", url, timeout=timeout, headers=headers)


def http_request(
    method: str, url: str, body: Any = None, timeout: float = 5, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """(status, text) of one request; status 0 when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text output, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        got = ",".join(sorted(p for p in label_text.rstrip("}").split(",") if p))
        if got == want:
            return float(value)
    return None


# ---------------------------------------------------------------------------------------- chaos


@dataclass
class ChaosConfig:
    jobs: int = 5000
    workers: int = 4  # at start, and the floor the chaos keeps
    max_workers: int = 6
    concurrency: int = 8
    lease_seconds: float = 2.0
    poll_interval: float = 0.1
    job_timeout: float = 5.0
    drain_timeout: float = 5.0
    max_tries: int = 25
    sleep_ms: tuple[int, int] = (2, 40)
    enqueue_seconds: float = 30.0  # enqueues are spread over this long; the chaos runs meanwhile
    batch: int = 50
    chaos_every: tuple[float, float] = (0.4, 1.2)  # seconds between two chaos actions
    kill_share: float = 0.5  # of stop actions, this share are SIGKILLs, the rest SIGTERM drains
    redis_restarts: int = 1
    redis_down_seconds: float = 1.0
    settle_timeout: float = 120.0
    seed: int = 0
    with_exporter: bool = True

    def queue_spec(self) -> dict[str, Any]:
        return {
            "functions": ["chaos_tasks.record"],
            "concurrency": self.concurrency,
            "job_timeout": self.job_timeout,
            "drain_timeout": self.drain_timeout,
            "max_tries": self.max_tries,
            "backoff": {"strategy": "fixed", "delay": 0.1, "jitter": 0},
            "lease_seconds": self.lease_seconds,
            "poll_interval": self.poll_interval,
            "retention": {"completed_seconds": 3600, "completed_max": max(10_000, 2 * self.jobs)},
        }


@dataclass
class Run:
    job: str
    pid: int
    start: float
    attempt: int
    end: float | None = None


@dataclass
class ChaosReport:
    jobs: int
    workers_started: int
    drains: int
    kills: int
    redis_restarts: int
    completed: int
    lost: int
    duplicates: int  # jobs that ran more than once
    extra_runs: int  # runs beyond one per job
    double_completions: int  # jobs whose task body ran to its end more than once
    reruns_by_cause: dict[str, int]
    recovery_waits: list[float] = field(repr=False)  # kill -> rerun, Redis up all along
    recovery_waits_in_outage: list[float] = field(repr=False)  # kill -> rerun, with a Redis outage in between
    outage_seconds: list[float]  # each Redis restart: from SIGTERM to answering again (AOF loaded)
    stall_seconds: list[float]  # Redis took > 0.5 s to answer a PING outside the restarts (a loaded host)
    drain_seconds: list[float] = field(repr=False)
    drains_before_start: int  # SIGTERM reached a worker still starting up: it died before taking a job
    seconds: float
    throughput: float
    lease_seconds: float
    poll_interval: float
    leftovers: dict[str, int]
    counts: dict[str, Any]
    exporter: dict[str, float | None]
    unexplained: list[str]
    seed: int

    @property
    def recovery_max(self) -> float:
        return max(self.recovery_waits, default=0.0)

    @property
    def recovery_p50(self) -> float:
        return statistics.median(self.recovery_waits) if self.recovery_waits else 0.0

    @property
    def drain_max(self) -> float:
        return max(self.drain_seconds, default=0.0)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("recovery_waits")
        out.pop("recovery_waits_in_outage")
        out.pop("drain_seconds")
        out.update(
            recovery_samples=len(self.recovery_waits),
            recovery_max=round(self.recovery_max, 3),
            recovery_p50=round(self.recovery_p50, 3),
            recovery_p99=round(_quantile(self.recovery_waits, 0.99), 3),
            recovery_over_lease_and_poll=sum(w > self.lease_seconds + self.poll_interval for w in self.recovery_waits),
            recovery_in_outage_max=round(max(self.recovery_waits_in_outage, default=0.0), 3),
            drain_max=round(self.drain_max, 3),
        )
        return out

    def markdown_row(self, label: str) -> str:
        outage = max(self.outage_seconds, default=0.0)
        by_kill, by_outage = self.reruns_by_cause["sigkill"], self.reruns_by_cause["redis_outage"]
        stalls = ""
        if self.stall_seconds:
            stalls = f" + {len(self.stall_seconds)} stall(s) up to {max(self.stall_seconds):.1f} s"
        return (
            f"| {label} | {self.jobs:,} | {self.workers_started} | {self.drains} | {self.kills}"
            f" | {self.redis_restarts} ({outage:.1f} s){stalls} | {self.lost}"
            f" | {self.duplicates} ({by_kill} / {by_outage})"
            f" | {self.recovery_p50:.2f} s | {self.recovery_max:.2f} s | {self.drain_max:.2f} s"
            f" | {self.seconds:.0f} s |"
        )


TABLE_HEADER = (
    "| run | jobs | workers started | drains (SIGTERM) | kills (SIGKILL) | Redis restarts (longest outage) | lost"
    " | duplicates (reruns after a kill / after an outage) | rerun wait p50 | rerun wait max | longest drain"
    " | wall time |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


class ChaosHarness:
    """Runs one chaos experiment in ``workdir``; ``run()`` returns the report."""

    def __init__(self, workdir: Path, config: ChaosConfig, redis_server: Any) -> None:
        self.workdir = workdir
        self.cfg = config
        self.server = redis_server
        self.rng = random.Random(config.seed)
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.queues_file = write_queues_file(workdir / "queues.yaml", {QUEUE: config.queue_spec()})
        self.env = clean_env(REDIS_URL=redis_server.url, ARQSCALE_QUEUES_FILE=str(self.queues_file))
        self.workers: list[ArqscaleProcess] = []
        self.exporter: ArqscaleProcess | None = None
        self.kills: list[tuple[int, float]] = []
        self.drains: list[ArqscaleProcess] = []
        self.outages: list[tuple[float, float]] = []
        self.stalls: list[tuple[float, float]] = []  # Redis slow or away when we did not restart it
        self.enqueued = 0
        self.job_ids = [f"c{i:07d}" for i in range(config.jobs)]

    # -- processes

    def start_worker(self) -> ArqscaleProcess:
        port = free_port()
        env = {**self.env, "ARQSCALE_WORKER_PORT": str(port)}
        n = len(self.workers)
        proc = ArqscaleProcess(["worker", "--queue", QUEUE], env, self.logs / f"worker-{n}.log", port)
        self.workers.append(proc)
        return proc

    def live_workers(self) -> list[ArqscaleProcess]:
        return [w for w in self.workers if w.alive() and w.terminated_at is None]

    def close(self) -> None:
        for proc in [*self.workers, *([self.exporter] if self.exporter else [])]:
            proc.close()

    # -- the experiment

    async def run(self) -> ChaosReport:
        from arqscale.core.spec import load_queues

        specs = load_queues(self.queues_file)
        redis = Redis.from_url(self.server.url)
        try:
            await redis.delete(RUNS_KEY, EVENTS_KEY)
            for _ in range(self.cfg.workers):
                self.start_worker()
            if self.cfg.with_exporter and command_exists("exporter"):
                port = free_port()
                env = {**self.env, "ARQSCALE_EXPORTER_PORT": str(port), "ARQSCALE_METRICS_API_PORT": str(free_port())}
                self.exporter = ArqscaleProcess(["exporter"], env, self.logs / "exporter.log", port)
            t0 = time.time()
            stop, done = asyncio.Event(), asyncio.Event()
            chaos = asyncio.create_task(self._chaos(stop, t0))
            watch = asyncio.create_task(self._watch_redis(done))
            await self._enqueue_all(redis, specs)
            stop.set()
            await chaos
            # Keep the floor of workers up and wait for every job to complete.
            while len(self.live_workers()) < self.cfg.workers:
                self.start_worker()
            completed = await self._settle(redis)
            seconds = time.time() - t0
            done.set()
            await watch
            for w in self.live_workers():
                w.terminate()
            for w in self.workers:
                if w.alive():
                    w.stop(self.cfg.drain_timeout + 10)
            self._reap_drains()
            return await self._report(redis, specs, completed, seconds)
        finally:
            await redis.aclose()
            self.close()

    async def _enqueue_all(self, redis: Redis, specs: dict[str, Any]) -> None:
        from arqscale.core.models import JobRequest
        from arqscale.core.producer import Producer

        producer = Producer(redis, specs)
        batches = [self.job_ids[i : i + self.cfg.batch] for i in range(0, len(self.job_ids), self.cfg.batch)]
        pause = self.cfg.enqueue_seconds / max(len(batches), 1)
        for batch in batches:
            requests = [
                JobRequest(function="record", args=[self.rng.randint(*self.cfg.sleep_ms)], job_id=job_id)
                for job_id in batch
            ]
            deadline = time.monotonic() + 30
            while True:
                try:
                    await producer.enqueue_many(QUEUE, requests)
                    break
                except REDIS_DOWN:  # the Redis restart: same ids again are the same jobs
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            self.enqueued += len(batch)
            await asyncio.sleep(pause)

    async def _chaos(self, stop: asyncio.Event, t0: float) -> None:
        restarts_at = [
            t0 + self.cfg.enqueue_seconds * (i + 1) / (self.cfg.redis_restarts + 1)
            for i in range(self.cfg.redis_restarts)
        ]
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.cfg.chaos_every))
            if stop.is_set():
                break
            self._reap_drains()
            if restarts_at and time.time() >= restarts_at[0]:
                restarts_at.pop(0)
                down = time.time()
                await asyncio.to_thread(self.server.restart, down_for=self.cfg.redis_down_seconds)
                self.outages.append((down, time.time()))
                continue
            self._one_action()

    def _one_action(self) -> None:
        live = self.live_workers()
        # Keep two workers able to take jobs (start-up takes seconds on a busy host): the rerun wait
        # then measures the lease, not a moment with nobody to run the job.
        if len(live) <= 2 or sum(w.is_ready() for w in live) <= 2:
            if len(live) < self.cfg.max_workers:
                self.start_worker()
            return
        # A worker still starting runs nothing: stopping it tests nothing, and a run whose kills all hit
        # such workers measured no recovery at all.
        victim = self.rng.choice([w for w in live if w.is_ready()] or live)
        if self.rng.random() < self.cfg.kill_share:
            victim.kill()  # the OOM killer
            self.kills.append((victim.pid, victim.killed_at or time.time()))
        else:
            victim.terminate()  # the HPA scaling down: drain
            self.drains.append(victim)
        # Scale back up most of the time, sometimes by two, so the worker count wanders.
        wanted = self.rng.choice([0, 1, 1, 1, 2])
        for _ in range(wanted):
            if len(self.live_workers()) < self.cfg.max_workers:
                self.start_worker()

    async def _watch_redis(self, done: asyncio.Event) -> None:
        """PING Redis every 0.1 s: windows where it failed or took over 0.5 s, outside our restarts, are stalls."""
        client = Redis.from_url(self.server.url, socket_timeout=30, socket_connect_timeout=1)
        windows: list[tuple[float, float]] = []
        try:
            while not done.is_set():
                began = time.time()
                try:
                    await client.ping()
                    ok = True
                except REDIS_DOWN:
                    ok = False
                ended = time.time()
                if not ok or ended - began > 0.5:
                    if windows and began - windows[-1][1] < 0.5:
                        windows[-1] = (windows[-1][0], ended)
                    else:
                        windows.append((began, ended))
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()
        self.stalls = [
            (a, b) for a, b in windows if not any(a <= up + 0.5 and down - 0.5 <= b for down, up in self.outages)
        ]

    def _reap_drains(self) -> None:
        for w in self.workers:
            w.poll()

    async def _settle(self, redis: Redis) -> int:
        from arqscale.core.keys import QueueKeys

        completed_key = QueueKeys.for_queue(QUEUE, f"arq:queue:{QUEUE}").completed
        deadline = time.monotonic() + self.cfg.settle_timeout
        done = 0
        while time.monotonic() < deadline:
            done = int(await redis.zcard(completed_key))
            if done >= self.cfg.jobs and await redis.zcard(f"arq:queue:{QUEUE}") == 0:
                break
            if not self.live_workers():
                self.start_worker()
            await asyncio.sleep(0.2)
        return done

    async def _report(self, redis: Redis, specs: dict[str, Any], completed: int, seconds: float) -> ChaosReport:
        from arqscale.core.counts import CountsReader
        from arqscale.core.keys import QueueKeys
        from arqscale.core.scores import LEASED

        qk = QueueKeys.for_queue(QUEUE, f"arq:queue:{QUEUE}")
        done_ids = {m.decode() for m in await redis.zrange(qk.completed, 0, -1)}
        runs = parse_events(await redis.lrange(EVENTS_KEY, 0, -1))
        per_job_runs = {k.decode(): int(v) for k, v in (await redis.hgetall(RUNS_KEY)).items()}
        leftovers = {
            "queue": int(await redis.zcard(qk.queue)),
            # Running jobs are parked in the queue under their leases (scores.LEASED): a subset of "queue".
            "active": int(await redis.zcount(qk.queue, LEASED, "+inf")),
            "dlq": int(await redis.hlen(qk.dlq)),
            "in_progress_keys": await _count_keys(redis, "arq:in-progress:*"),
            "job_keys": await _count_keys(redis, "arq:job:*"),
            "retry_keys": await _count_keys(redis, "arq:retry:*"),
        }
        counts = (await CountsReader(redis).read(specs))[QUEUE].as_dict()
        exporter = self._exporter_figures()
        analysis = analyse(
            runs,
            self.kills,
            {w.pid: w.terminated_at for w in self.drains if w.terminated_at is not None},
            self.outages + self.stalls,
            self.cfg.lease_seconds,
            dropped={w.pid: dropped_outcomes(w.output()) for w in self.workers},
        )
        lost = [j for j in self.job_ids if j not in done_ids]
        timeline = {
            "kills": self.kills,
            "drains": [(w.pid, w.terminated_at, w.exited_at, w.proc.returncode) for w in self.drains],
            "outages": self.outages,
            "stalls": self.stalls,
            "workers": [(w.pid, w.started, w.log_path.name) for w in self.workers],
        }
        (self.workdir / "timeline.json").write_text(json.dumps(timeline))
        pids_with_runs = {r.pid for r in runs}
        # A worker SIGTERMed while still importing dies of the signal before it installs its handler;
        # that is harmless only if it never took a job.
        clean_drains = [w for w in self.drains if w.killed_at is None and w.proc.returncode == 0]
        early = [w for w in self.drains if w.killed_at is None and w.proc.returncode == -signal.SIGTERM]
        bad_drains = [
            f"drained worker pid {w.pid} exited {w.proc.returncode}"
            for w in self.drains
            if w.killed_at is None and w not in clean_drains and (w not in early or w.pid in pids_with_runs)
        ]
        drain_seconds = [(w.exited_at or time.time()) - (w.terminated_at or 0) for w in clean_drains]
        recorded_mismatch = [j for j, n in per_job_runs.items() if n != len(analysis.runs_by_job.get(j, []))]
        unexplained = (
            analysis.unexplained + bad_drains + [f"{j}: runs counter differs from run log" for j in recorded_mismatch]
        )
        return ChaosReport(
            jobs=self.cfg.jobs,
            workers_started=len(self.workers),
            drains=len(self.drains),
            kills=len(self.kills),
            redis_restarts=len(self.outages),
            completed=completed,
            lost=len(lost),
            duplicates=sum(1 for rs in analysis.runs_by_job.values() if len(rs) > 1),
            extra_runs=sum(len(rs) - 1 for rs in analysis.runs_by_job.values() if rs),
            double_completions=sum(1 for rs in analysis.runs_by_job.values() if sum(r.end is not None for r in rs) > 1),
            reruns_by_cause=analysis.causes,
            recovery_waits=analysis.recovery_waits,
            recovery_waits_in_outage=analysis.recovery_waits_in_outage,
            outage_seconds=[round(up - down, 3) for down, up in self.outages],
            stall_seconds=[round(up - down, 3) for down, up in self.stalls],
            drain_seconds=drain_seconds,
            drains_before_start=len(early),
            seconds=seconds,
            throughput=self.cfg.jobs / seconds if seconds else 0.0,
            lease_seconds=self.cfg.lease_seconds,
            poll_interval=self.cfg.poll_interval,
            leftovers=leftovers,
            counts=counts,
            exporter=exporter,
            unexplained=unexplained[:50] + lost[:20],
            seed=self.cfg.seed,
        )

    def _exporter_figures(self) -> dict[str, float | None]:
        if self.exporter is None:
            return {}
        if not self.exporter.alive():
            return {"exporter_exited": float(self.exporter.poll() or 0)}
        # The exporter caches for ARQSCALE_EXPORTER_REFRESH_SECONDS (1 s): wait for a fresh read.
        deadline = time.monotonic() + 10
        figures: dict[str, float | None] = {}
        while time.monotonic() < deadline:
            status, text = http_get(self.exporter.url("/metrics"))
            figures = {
                state: metric_value(text, f"bullmq_queue_{state}", queue=QUEUE) if status == 200 else None
                for state in ("waiting", "active", "delayed", "paused", "failed")
            }
            if all(v == 0 for v in figures.values()):
                break
            time.sleep(0.3)
        return figures


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def _count_keys(redis: Redis, pattern: str) -> int:
    n = 0
    async for _ in redis.scan_iter(match=pattern, count=1000):
        n += 1
    return n


def parse_events(raw: Iterable[bytes]) -> list[Run]:
    """Turn the ``chaos:events`` list into runs (an ``e`` event closes the open run of its job and pid)."""
    runs: list[Run] = []
    open_runs: dict[tuple[str, int], Run] = {}
    for item in raw:
        kind, job, pid_text, ts_text, attempt_text = item.decode().split()
        pid, ts = int(pid_text), float(ts_text)
        if kind == "s":
            run = Run(job=job, pid=pid, start=ts, attempt=int(attempt_text))
            runs.append(run)
            open_runs[(job, pid)] = run
        else:
            started = open_runs.pop((job, pid), None)
            if started is not None:
                started.end = ts
    return runs


@dataclass
class Analysis:
    runs_by_job: dict[str, list[Run]]
    causes: dict[str, int]
    recovery_waits: list[float]
    recovery_waits_in_outage: list[float]
    unexplained: list[str]


DROPPED = "outcomes dropped, the lease had passed to another worker (this one stalled or was cut off): "


def dropped_outcomes(log: str) -> set[str]:
    """The jobs whose outcome this worker's log says Redis refused: its lease had lapsed meanwhile."""
    return {job.strip() for line in log.splitlines() if DROPPED in line for job in line.split(DROPPED, 1)[1].split(",")}


def analyse(
    runs: list[Run],
    kills: list[tuple[int, float]],
    drained: dict[int, float],
    outages: list[tuple[float, float]],
    lease_seconds: float,
    slack: float = 0.05,
    dropped: dict[int, set[str]] | None = None,
) -> Analysis:
    """Explain every rerun: the previous run's worker was SIGKILLed, or drained, or Redis was down, or the
    worker itself stalled past its lease and said so (``dropped``: pid -> jobs whose outcome Redis refused
    it; on a starved machine a worker's loop can miss its renewals, and the job then runs again, as it
    must, while the stalled copy's outcome is dropped, not written over the new run's).

    A rerun is explained by a SIGKILL only when the kill came after the previous run started and
    before the rerun started (two live runs of one job at once would be a lease bug). The wait of a
    killed worker's job is the time from the kill to the job's next start.
    """
    killed = dict(kills)
    by_job: dict[str, list[Run]] = {}
    for run in runs:
        by_job.setdefault(run.job, []).append(run)
    causes = {"sigkill": 0, "drain": 0, "redis_outage": 0, "reported_stall": 0}
    dropped = dropped or {}
    waits: list[float] = []
    waits_in_outage: list[float] = []
    unexplained: list[str] = []
    for job, job_runs in by_job.items():
        job_runs.sort(key=lambda r: r.start)
        for prev, nxt in itertools.pairwise(job_runs):
            kill_at = killed.get(prev.pid)
            if kill_at is not None and prev.start - slack <= kill_at <= nxt.start + slack:
                causes["sigkill"] += 1
                wait = max(nxt.start - kill_at, 0.0)
                # Redis away between the kill and the rerun: nothing could pick the job up meanwhile.
                hit = any(down <= nxt.start and kill_at <= up for down, up in outages)
                (waits_in_outage if hit else waits).append(wait)
            elif prev.pid in drained and prev.end is None and drained[prev.pid] <= nxt.start + slack:
                causes["drain"] += 1
            elif any(down - lease_seconds <= nxt.start and prev.start <= up + lease_seconds for down, up in outages):
                causes["redis_outage"] += 1
            elif job in dropped.get(prev.pid, set()) and prev.end is not None:
                causes["reported_stall"] += 1
            else:
                unexplained.append(
                    f"{job}: run on pid {prev.pid} at {prev.start:.3f} (ended: {prev.end is not None}) was followed"
                    f" by a run on pid {nxt.pid} at {nxt.start:.3f} with no kill, drain or outage to explain it"
                )
    return Analysis(
        runs_by_job=by_job,
        causes=causes,
        recovery_waits=waits,
        recovery_waits_in_outage=waits_in_outage,
        unexplained=unexplained,
    )


def redis_version() -> str:
    """The version of the redis-server the harness starts (the first on PATH), e.g. ``7.0.15``."""
    import re
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        return "?"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else "?"


def run_label(kind: str, config: ChaosConfig) -> str:
    return f"{kind}, seed {config.seed}, lease {config.lease_seconds:g} s, Redis {redis_version()}"


def run_chaos(workdir: Path, config: ChaosConfig) -> ChaosReport:
    """Start a private AOF redis-server in ``workdir`` and run the experiment against it."""
    from redis_server import RedisServer

    server = RedisServer(workdir / "redis", aof=True).start()
    try:
        harness = ChaosHarness(workdir, config, server)
        return asyncio.run(harness.run())
    finally:
        server.kill()


# ------------------------------------------------------- every process through one Redis configuration

CONN_QUEUES: dict[str, dict[str, Any]] = {
    # `conn` has a worker in the tests; `idle` never does, so its jobs stay waiting and countable.
    "conn": {"functions": ["chaos_tasks.echo"], "job_timeout": 5, "lease_seconds": 2, "poll_interval": 0.1},
    "idle": {"functions": ["chaos_tasks.echo"], "job_timeout": 5},
}


def redis_settings_from_env(env: dict[str, str]) -> Any:
    """``RedisSettings`` built from the REDIS_* entries of ``env`` (what a subprocess would read)."""
    from arqscale.core.settings import RedisSettings

    values = {k.removeprefix("REDIS_").lower(): v for k, v in env.items() if k.startswith("REDIS_")}
    return RedisSettings(**values)


async def wait_completed(redis: Redis, queue: str, job_ids: list[str], within: float = 20) -> None:
    from arqscale.core.keys import QueueKeys

    key = QueueKeys.for_queue(queue, f"arq:queue:{queue}").completed
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        scores = await redis.zmscore(key, job_ids)
        if all(s is not None for s in scores):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"jobs {job_ids} not completed on {queue!r} within {within}s")


async def prove_worker(env: dict[str, str], workdir: Path) -> str:
    """A worker started with ``env`` runs jobs enqueued through the same settings; returns its output."""
    from arqscale.core.connection import create_redis
    from arqscale.core.producer import Producer
    from arqscale.core.spec import parse_queues

    settings = redis_settings_from_env(env)
    redis = create_redis(settings)
    worker = ArqscaleProcess(
        ["worker", "--queue", "conn"],
        {**env, "ARQSCALE_WORKER_PORT": str(free_port())},
        workdir / f"worker-{time.monotonic_ns()}.log",
    )
    try:
        producer = Producer(redis, parse_queues({"queues": CONN_QUEUES}))
        ids = [f"conn-{time.monotonic_ns()}-{i}" for i in range(3)]
        for i, job_id in enumerate(ids):
            await producer.enqueue("conn", "echo", i, job_id=job_id)
        try:
            await wait_completed(redis, "conn", ids)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker output:\n{worker.output()[-3000:]}") from None
        assert worker.alive(), worker.output()
        code = worker.stop(15)
        assert code == 0, f"worker exited {code} after SIGTERM:\n{worker.output()[-3000:]}"
        return worker.output()
    finally:
        worker.close()
        await redis.aclose()


async def enqueue_idle(env: dict[str, str], n: int) -> list[str]:
    """Enqueue ``n`` jobs on the worker-less ``idle`` queue through ``env``'s settings."""
    from arqscale.core.connection import create_redis
    from arqscale.core.producer import Producer
    from arqscale.core.spec import parse_queues

    redis = create_redis(redis_settings_from_env(env))
    try:
        producer = Producer(redis, parse_queues({"queues": CONN_QUEUES}))
        ids = [f"idle-{time.monotonic_ns()}-{i}" for i in range(n)]
        for job_id in ids:
            await producer.enqueue("idle", "echo", job_id=job_id)
        return ids
    finally:
        await redis.aclose()


def prove_exporter(env: dict[str, str], workdir: Path, waiting: int) -> str:
    """The exporter started with ``env`` reads Redis: ``bullmq_queue_waiting{queue="idle"}`` is ``waiting``."""
    port = free_port()
    exporter = ArqscaleProcess(
        ["exporter"],
        {**env, "ARQSCALE_EXPORTER_PORT": str(port), "ARQSCALE_METRICS_API_PORT": str(free_port())},
        workdir / f"exporter-{time.monotonic_ns()}.log",
        port,
    )
    try:
        deadline = time.monotonic() + 20
        value: float | None = None
        while time.monotonic() < deadline and exporter.alive():
            status, text = http_get(exporter.url("/metrics"))
            value = metric_value(text, "bullmq_queue_waiting", queue="idle") if status == 200 else None
            if value == waiting:
                break
            time.sleep(0.2)
        assert value == waiting, f"exporter shows waiting={value}, want {waiting}:\n{exporter.output()[-3000:]}"
        code = exporter.stop(10)
        assert code == 0, f"exporter exited {code} after SIGTERM:\n{exporter.output()[-3000:]}"
        return exporter.output()
    finally:
        exporter.close()


def prove_api(env: dict[str, str], workdir: Path, token: str = "api-token-for-tests") -> str:
    """The API started with ``env`` enqueues a job and reads its state and its queue's counts."""
    port = free_port()
    api = ArqscaleProcess(
        ["api"],
        {**env, "ARQSCALE_API_PORT": str(port), "ARQSCALE_API_TOKEN": token},
        workdir / f"api-{time.monotonic_ns()}.log",
        port,
    )
    auth = {"Authorization": f"Bearer {token}"}
    try:
        api.wait_http("/livez")
        job_id = f"api-{time.monotonic_ns()}"
        status, body = http_request(
            "POST", api.url("/v1/queues/idle/jobs"), {"function": "echo", "args": [1], "job_id": job_id}, headers=auth
        )
        assert status == 202, f"POST answered {status} {body}:\n{api.output()[-3000:]}"
        status, body = http_get(api.url(f"/v1/jobs/{job_id}"), headers=auth)
        assert status == 200 and json.loads(body)["state"] == "queued", f"{status} {body}"
        status, body = http_get(api.url("/v1/queues/idle"), headers=auth)
        assert status == 200, f"{status} {body}"
        status, body = http_get(api.url("/healthz"), headers=auth)
        assert status == 200 and json.loads(body)["redis"]["connected"] is True, f"{status} {body}"
        code = api.stop(10)
        assert code == 0, f"api exited {code} after SIGTERM:\n{api.output()[-3000:]}"
        return api.output()
    finally:
        api.close()


def prove_cli(env: dict[str, str]) -> str:
    """The CLI with ``env``: ``enqueue``, ``status`` (queues and one job), ``dlq list``; returns all output."""
    job_id = f"cli-{time.monotonic_ns()}"
    outputs = []
    for args, want in (
        (["enqueue", "idle", "echo", "--args", "[1]", "--job-id", job_id], job_id),
        (["status", "--json"], '"idle"'),
        (["status", job_id, "--json"], '"queued"'),
        (["dlq", "list", "idle"], "idle"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "arqscale", *args], env=env, capture_output=True, text=True, timeout=60
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"`arqscale {' '.join(args)}` exited {done.returncode}:\n{output[-3000:]}"
        assert want in done.stdout, f"`arqscale {' '.join(args)}` printed no {want}:\n{output[-3000:]}"
        outputs.append(output)
    return "\n".join(outputs)
