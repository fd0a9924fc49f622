"""Local ``arqscale worker`` processes standing in for a Deployment's pods.

Scaling up starts processes; scaling down sends SIGTERM, the worker's graceful drain (no more pickups,
running jobs finish within the drain timeout, the rest are put back), exactly what the kubelet sends
a deleted pod. Which ones go follows the ReplicaSet controller's ranking (kubernetes
``pkg/controller/controller_utils.go``, ``ActivePodsWithRanks.Less``): not-ready before ready, then
the lower ``controller.kubernetes.io/pod-deletion-cost`` (our workers set 1000 while running jobs and
-1000 when idle, ``arqscale.worker.deletion_cost``), then the most recently ready. Here the cost is read
live from each worker's ``arqscale_worker_jobs_in_flight`` instead of the annotation, which a worker
only patches once a state held 15 s. A process that exits without being told is replaced, as a
ReplicaSet replaces a failed pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

from arqscale.core.ports import free_port

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
BUSY_COST, IDLE_COST = 1000, -1000  # arqscale.worker.deletion_cost's values


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: SIGTERM the worker (a graceful drain) when the autoscaler dies without stopping it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent, getppid, exit_now = os.getpid(), os.getppid, os._exit

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if getppid() != parent:
            exit_now(1)

    return preexec


@dataclass
class WorkerProc:
    number: int
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    ready_since: float | None = None
    in_flight: int | None = None
    draining_since: float | None = None
    log: IO[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def deletion_rank(self) -> tuple[int, int, float]:
        """Smaller goes first (``ActivePodsWithRanks.Less``)."""
        ready = self.ready_since is not None
        cost = BUSY_COST if (self.in_flight or 0) > 0 or self.in_flight is None else IDLE_COST
        return (int(ready), cost, -(self.ready_since or self.started_at))


class WorkerPool:
    def __init__(
        self,
        queue: str,
        *,
        env: Mapping[str, str] | None = None,
        log_dir: Path,
        worker_args: Sequence[str] = (),
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.env = dict(os.environ if env is None else env)
        self.log_dir = log_dir
        self.worker_args = list(worker_args)
        self.python = python
        self.clock = clock
        self.workers: list[WorkerProc] = []
        self._numbers = 0
        self.unexpected_exits = 0

    # -- what the autoscaler reads ------------------------------------------------------------------

    def serving(self) -> list[WorkerProc]:
        """Processes not told to stop (a Deployment's non-terminating pods: ``status.replicas``)."""
        return [w for w in self.workers if w.draining_since is None and w.alive()]

    def draining(self) -> list[WorkerProc]:
        return [w for w in self.workers if w.draining_since is not None and w.alive()]

    def ready_count(self) -> int:
        return sum(1 for w in self.serving() if w.ready_since is not None)

    # -- changes ----------------------------------------------------------------------------------

    def start_one(self) -> WorkerProc:
        self._numbers += 1
        port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"worker-{self.queue}-{self._numbers}.log"
        log = log_path.open("ab")
        argv = [self.python, "-m", "arqscale", "worker", "--queue", self.queue, "--port", str(port), *self.worker_args]
        proc = subprocess.Popen(
            argv,
            env=self.env | {"ARQSCALE_WORKER_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches the autoscaler only, which drains them
            preexec_fn=_die_with_parent(),
        )
        worker = WorkerProc(self._numbers, port, proc, log_path, self.clock(), log=log)
        self.workers.append(worker)
        return worker

    def stop(self, worker: WorkerProc) -> None:
        """SIGTERM: the worker drains."""
        worker.draining_since = self.clock()
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signal.SIGTERM)

    async def scale_to(self, replicas: int) -> list[WorkerProc]:
        """Start or drain processes until ``replicas`` serve; returns those told to stop."""
        serving = self.serving()
        for _ in range(replicas - len(serving)):
            self.start_one()
        stopped: list[WorkerProc] = []
        if len(serving) > replicas:
            await self.probe()
            for worker in sorted(serving, key=WorkerProc.deletion_rank)[: len(serving) - replicas]:
                self.stop(worker)
                stopped.append(worker)
        return stopped

    def reap(self) -> list[WorkerProc]:
        """Forget processes that exited; returns the ones that exited without being told to."""
        gone = [w for w in self.workers if not w.alive()]
        for w in gone:
            if w.log is not None:
                w.log.close()
        self.workers = [w for w in self.workers if w.alive()]
        unexpected = [w for w in gone if w.draining_since is None]
        self.unexpected_exits += len(unexpected)
        return unexpected

    async def probe(self) -> None:
        """Readiness (``/readyz``) and jobs in flight (``/metrics``) of every serving worker."""
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(self._probe_one(http, w) for w in self.serving()))

    async def _probe_one(self, http: aiohttp.ClientSession, worker: WorkerProc) -> None:
        base = f"http://127.0.0.1:{worker.port}"
        try:
            async with http.get(base + "/readyz") as resp:
                ready = resp.status == 200
            if ready:
                async with http.get(base + "/metrics") as resp:
                    worker.in_flight = in_flight(await resp.text())
        except (aiohttp.ClientError, TimeoutError):
            ready = False
        if ready and worker.ready_since is None:
            worker.ready_since = self.clock()
        elif not ready:
            worker.ready_since = None

    async def stop_all(self, within: float) -> list[WorkerProc]:
        """Drain every process; SIGKILL what is still running after ``within`` seconds (returned)."""
        for w in self.workers:
            if w.alive() and w.draining_since is None:
                self.stop(w)
        await asyncio.gather(*(asyncio.to_thread(_wait, w.proc, within) for w in self.workers))
        killed = [w for w in self.workers if w.alive()]
        for w in killed:
            w.proc.kill()
            w.proc.wait(5)
        self.reap()
        return killed


def _wait(proc: subprocess.Popen[bytes], within: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(within)


def in_flight(exposition: str) -> int | None:
    for line in exposition.splitlines():
        if line.startswith("arqscale_worker_jobs_in_flight{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return None
