"""The sync loop: every ``sync_period`` read the metrics, run the algorithm, scale the pool.

Differences from the controller in a cluster, on purpose (docs/autoscaling.md):

- ``spec.replicas`` is the number of processes the pool should serve, ``status.replicas`` the ones
  serving (not told to stop), "ready" the ones whose ``/readyz`` answers 200; there is no scheduler,
  so a started process is never Pending, and a drained one leaves the counts at once (a terminating pod).
- External metrics only (what the chart renders); no CPU initialisation period or readiness delay
  (they apply to Resource metrics), and no legacy path for an HPA without ``behavior`` (the chart
  always writes one; missing fields get the API server's defaults).
- A metric that cannot be read counts as invalid, as in ``computeReplicasForMetrics``: all invalid, or
  some invalid and the rest would shrink the pool, means no change this sync.
- The sync period is the controller's ``--horizontal-pod-autoscaler-sync-period`` (15 s); locally it may
  be shorter. The times in ``behavior`` (windows, policy periods) are not scaled with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from arqscale.autoscaler.algorithm import (
    ControllerState,
    average_value_replicas,
    combine,
    reconcile,
    tolerances,
    value_replicas,
)
from arqscale.autoscaler.hpa import Hpa
from arqscale.autoscaler.metrics_client import MetricsClient, MetricUnavailable
from arqscale.autoscaler.pool import WorkerPool


@dataclass(frozen=True, slots=True)
class Change:
    at: float  # seconds since the autoscaler started
    queue: str
    before: int
    after: int
    reason: str
    readings: str


@dataclass
class Autoscaler:
    hpa: Hpa
    pool: WorkerPool
    client: MetricsClient
    sync_period: float = 15.0
    on_change: Callable[[Change], None] = lambda change: None
    on_problem: Callable[[str], None] = lambda text: None
    clock: Callable[[], float] = time.monotonic
    state: ControllerState = field(default_factory=ControllerState)
    spec_replicas: int = 0
    changes: list[Change] = field(default_factory=list)
    syncs: int = 0

    def __post_init__(self) -> None:
        self._started = self.clock()

    async def start(self) -> None:
        """The Deployment as the chart creates it: the HPA's minimum from the first moment."""
        self.spec_replicas = self.hpa.min_replicas
        await self.pool.scale_to(self.spec_replicas)

    async def sync(self) -> int:
        """One reconcile; returns the replicas the pool now serves (or is starting)."""
        for worker in self.pool.reap():
            self.on_problem(f"worker {worker.number} exited with code {worker.proc.returncode}; replacing it")
        await self.pool.scale_to(self.spec_replicas)  # the ReplicaSet's job: replace what died
        await self.pool.probe()
        status_replicas = len(self.pool.serving())
        ready = self.pool.ready_count()
        tol = tolerances(self.hpa)
        proposals: list[int | None] = []
        readings = []
        for metric in self.hpa.metrics:
            try:
                usage = await self.client.usage_milli(metric)
            except MetricUnavailable as exc:
                self.on_problem(f"metric unavailable: {exc}")
                proposals.append(None)
                readings.append(f"{metric.name} ?")
                continue
            if metric.target_type == "AverageValue":
                proposals.append(average_value_replicas(usage, metric.target_milli, status_replicas, tol))
            else:
                proposals.append(value_replicas(usage, metric.target_milli, self.spec_replicas, ready, tol))
            readings.append(f"{metric.name} {usage / 1000:g}/{metric.target_milli / 1000:g}")
        now = self.clock()
        decision = reconcile(self.hpa, self.state, self.spec_replicas, combine(proposals, self.spec_replicas), now)
        self.state = decision.state
        self.syncs += 1
        if decision.desired != self.spec_replicas:
            change = Change(
                now - self._started,
                self.pool.queue,
                self.spec_replicas,
                decision.desired,
                decision.reason,
                ", ".join(readings),
            )
            self.changes.append(change)
            self.spec_replicas = decision.desired
            await self.pool.scale_to(self.spec_replicas)
            self.on_change(change)
        return self.spec_replicas

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        while not stop.is_set():
            started = self.clock()
            await self.sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(self.sync_period - (self.clock() - started), 0.01))


def describe(change: Change) -> str:
    verb = "up" if change.after > change.before else "down"
    return (
        f"[{change.at:7.1f}s] {change.queue}: {change.before} -> {change.after} workers "
        f"(scale {verb}: {change.reason}; {change.readings})"
    )
