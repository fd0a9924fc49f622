"""Chaos: no job is lost while workers are drained, killed and started, and Redis restarts under them.

Real processes only: a private redis-server with AOF, four or more ``arqscale worker --queue chaos``
subprocesses, the ``arqscale exporter``. The harness is in ``chaos_tasks`` (bench/soak.py runs it
longer). Runs in the default ``pytest`` run (about a minute); ``-m "not slow"`` leaves it out.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys, job_key
from arqscale.core.models import DeadJob
from arqscale.core.producer import Producer
from arqscale.core.spec import load_queues
from chaos_tasks import (
    TABLE_HEADER,
    ArqscaleProcess,
    ChaosConfig,
    ChaosReport,
    clean_env,
    command_exists,
    free_port,
    http_get,
    run_chaos,
    run_label,
    wait_completed,
    write_queues_file,
)

CONFIG = ChaosConfig(
    jobs=int(os.environ.get("ARQSCALE_CHAOS_JOBS", "5000")),
    workers=4,
    max_workers=6,
    concurrency=8,
    lease_seconds=2.0,
    poll_interval=0.1,
    job_timeout=5.0,
    drain_timeout=5.0,
    sleep_ms=(10, 150),
    enqueue_seconds=40.0,
    chaos_every=(0.8, 2.0),
    kill_share=0.5,
    redis_restarts=1,
    redis_down_seconds=0.2,  # plus the AOF load: about half a second without Redis
    seed=int(os.environ.get("ARQSCALE_CHAOS_SEED", "5")),
)


# The chaos run is the module fixture below: the first test to use it pays for it (about a minute).
slow = [pytest.mark.slow, pytest.mark.timeout(420)]


def _chaos_test(fn: Any) -> Any:
    for mark in slow:
        fn = mark(fn)
    return fn


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ChaosReport:
    if not command_exists("worker"):
        pytest.skip("`arqscale worker` has not landed yet")
    workdir: Path = tmp_path_factory.mktemp("chaos")
    result = run_chaos(workdir, CONFIG)
    (workdir / "report.json").write_text(json.dumps(result.summary(), indent=2, default=str))
    print(f"\nchaos figures ({workdir}):\n{TABLE_HEADER}\n{result.markdown_row(run_label('pytest', CONFIG))}")
    print(json.dumps(result.summary(), default=str))
    return result


@_chaos_test
def test_every_job_completed_and_none_lost(report: ChaosReport) -> None:
    assert report.lost == 0, report.unexplained
    assert report.completed == CONFIG.jobs


@_chaos_test
def test_the_chaos_happened(report: ChaosReport) -> None:
    assert report.redis_restarts == CONFIG.redis_restarts
    assert report.kills >= 3 and report.drains >= 3, (report.kills, report.drains)
    assert report.workers_started > CONFIG.workers  # and new ones were started meanwhile


@_chaos_test
def test_every_rerun_is_explained_by_a_kill(report: ChaosReport) -> None:
    """Duplicates only where a SIGKILLed worker had the job in flight (or a worker reported it stalled past
    its lease: tests/system/test_chaos_analysis.py), never after a clean drain."""
    assert report.unexplained == []
    assert report.reruns_by_cause["drain"] == 0, "a drain within drain_timeout must not cut a job short"
    # Each kill can repeat at most the jobs that worker had in flight.
    assert report.reruns_by_cause["sigkill"] <= report.kills * CONFIG.concurrency
    assert report.duplicates <= report.extra_runs


@_chaos_test
def test_a_short_redis_restart_repeats_no_job(report: ChaosReport) -> None:
    """Leases are renewed every lease/3: an outage shorter than 2/3 of the lease lets none of them lapse.

    (Longer outages do: the job runs again elsewhere and the cut-off worker finishes its copy too;
    bench/soak.py measures that case, docs/reliability.md gives the figures.)
    """
    margin = CONFIG.lease_seconds * 2 / 3 - 0.2
    longest = max([*report.outage_seconds, *report.stall_seconds])
    if longest >= margin:
        pytest.skip(f"Redis was away or stalled for {longest:.2f}s, not under {margin:.2f}s (a loaded machine)")
    assert report.reruns_by_cause["redis_outage"] == 0


@_chaos_test
def test_a_killed_workers_jobs_run_again_within_the_lease(report: ChaosReport) -> None:
    assert report.recovery_waits, "no kill hit a running job: raise the load or the kill share"
    # The bound: the lease (renewed every lease/3, so it runs out at most lease_seconds after the kill)
    # plus one poll and a pickup. arq alone would wait for the job timeout's in-progress expiry.
    bound = CONFIG.lease_seconds + CONFIG.poll_interval + 1.0  # + pickup, on a machine that may be busy
    assert report.recovery_max <= bound, sorted(report.recovery_waits)[-5:]


@_chaos_test
def test_drains_finish_running_jobs_within_the_drain_timeout(report: ChaosReport) -> None:
    assert report.drain_max <= CONFIG.drain_timeout + 2.0


@_chaos_test
def test_nothing_left_behind(report: ChaosReport) -> None:
    assert report.leftovers == {
        "queue": 0,
        "active": 0,
        "dlq": 0,
        "in_progress_keys": 0,
        "job_keys": 0,
        "retry_keys": 0,
    }


@_chaos_test
def test_counts_are_back_at_zero(report: ChaosReport) -> None:
    counts = report.counts
    assert (counts["waiting"], counts["active"], counts["delayed"], counts["paused"], counts["failed"]) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert counts["completed"] == CONFIG.jobs


@_chaos_test
def test_the_exporter_survived_and_reads_zero(report: ChaosReport) -> None:
    if not command_exists("exporter"):
        pytest.skip("`arqscale exporter` has not landed yet")
    assert "exporter_exited" not in report.exporter, "the exporter died during the chaos (Redis restart?)"
    assert report.exporter == {"waiting": 0, "active": 0, "delayed": 0, "paused": 0, "failed": 0}


# ------------------------------------------------------ poison and hostile jobs, end to end

POISON_QUEUES = {
    "safe": {  # the default serializer: JSON, data only
        "functions": ["chaos_tasks.echo", "chaos_tasks.fail_always", "chaos_tasks.fixable", "chaos_tasks.record"],
        "max_tries": 2,
        "backoff": {"strategy": "fixed", "delay": 0.1, "jitter": 0},
        "job_timeout": 1,
        "lease_seconds": 2,
        "poll_interval": 0.1,
    },
    "legacy": {"functions": ["chaos_tasks.echo"], "serializer": "pickle"},  # opted in, and no worker here
}


class _Hostile:
    """Unpickling this creates the canary file: proof that someone unpickled it."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.canary), "w"))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arqscale", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def _dead_entries(redis: Redis, dlq: str, ids: list[str], within: float = 20) -> dict[str, DeadJob]:
    """The dead-letter entries of ``ids`` once all are there ({} if they do not all arrive in time)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        raw = await redis.hmget(dlq, ids)
        if all(r is not None for r in raw):
            return {i: DeadJob.model_validate_json(r) for i, r in zip(ids, raw, strict=True)}
        await asyncio.sleep(0.1)
    return {}


@pytest.mark.timeout(120)
async def test_poison_and_hostile_jobs_end_dead_while_good_jobs_run(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    """Hostile pickle, undecodable bytes, unknown function, always-failing and timing-out jobs all end in
    the dead-letter store with a clear error while a real worker keeps serving good jobs; nobody ever
    unpickles (worker on a JSON queue, API, ``dlq``, ``status``); ``dlq requeue`` runs a fixed job again.
    """
    for command in ("worker", "api", "dlq", "status"):
        if not command_exists(command):
            pytest.skip(f"`arqscale {command}` has not landed yet")
    canary = tmp_path / "unpickled-canary"
    hostile = pickle.dumps(_Hostile(canary))
    queues_file = write_queues_file(tmp_path / "queues.yaml", POISON_QUEUES)
    env = clean_env(REDIS_URL=redis_url, ARQSCALE_QUEUES_FILE=str(queues_file))
    specs = load_queues(queues_file)
    safe = QueueKeys.for_queue("safe", specs["safe"].queue_key)
    legacy = QueueKeys.for_queue("legacy", specs["legacy"].queue_key)
    now = round(time.time() * 1000)

    # Written straight into Redis, as anyone with write access could.
    await redis.set(job_key("hostile"), hostile)
    await redis.set(job_key("garbage"), b"\xff\xfe not a payload")
    await redis.set(job_key("stranger"), json.dumps({"f": "rm_rf", "a": ["/"], "k": {}, "t": None, "et": now}))
    await redis.zadd(safe.queue, {"hostile": now, "garbage": now, "stranger": now})
    producer = Producer(redis, specs)
    await producer.enqueue("safe", "fail_always", job_id="poison")
    await producer.enqueue("safe", "fixable", job_id="fixme")
    await producer.enqueue("safe", "record", 3000, job_id="overtime")  # sleeps 3 s, job_timeout is 1 s
    good = [f"good-{i}" for i in range(30)]
    for job_id in good:
        await producer.enqueue("safe", "echo", job_id, job_id=job_id)
    # A hostile payload in the pickle queue's dead-letter store: only ever shown and requeued as bytes.
    await redis.hset(
        legacy.dlq,
        "legacy-hostile",
        DeadJob(
            job_id="legacy-hostile",
            queue="legacy",
            function="echo",
            attempts=1,
            error="RuntimeError: boom",
            failed_at=time.time(),
            payload_b64=base64.b64encode(hostile).decode(),
        ).model_dump_json(),
    )
    await redis.zadd(legacy.dlq_index, {"legacy-hostile": now})

    worker = ArqscaleProcess(
        ["worker", "--queue", "safe"], {**env, "ARQSCALE_WORKER_PORT": str(free_port())}, tmp_path / "worker.log"
    )
    try:
        await wait_completed(redis, "safe", good, within=30)
        dead_ids = ["hostile", "garbage", "stranger", "poison", "fixme", "overtime"]
        entries = await _dead_entries(redis, safe.dlq, dead_ids)
        assert entries, f"dead-letter store: {await redis.hkeys(safe.dlq)}\n{worker.output()[-3000:]}"
        assert entries["hostile"].error.startswith("undecodable payload")
        assert entries["garbage"].error.startswith("undecodable payload")
        assert entries["stranger"].error.startswith("unknown function 'rm_rf'")
        assert entries["poison"].attempts == 2 and "fails on every try" in entries["poison"].error
        assert entries["fixme"].attempts == 2 and "not fixed yet" in entries["fixme"].error
        assert entries["overtime"].attempts == 2 and "timed out after 1s" in entries["overtime"].error
        assert worker.alive(), worker.output()

        # Reading them never unpickles: the CLI and the API, on the JSON queue and the pickle queue.
        for args in (
            ("dlq", "list", "--json"),
            ("dlq", "show", "safe", "hostile"),
            ("dlq", "show", "legacy", "legacy-hostile"),
            ("status", "hostile"),
            ("status", "legacy-hostile", "--json"),
        ):
            done = _cli(env, *args)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        port = free_port()
        api = ArqscaleProcess(["api"], {**env, "ARQSCALE_API_PORT": str(port)}, tmp_path / "api.log", port)
        try:
            api.wait_http("/livez")
            for job_id in ("hostile", "legacy-hostile"):
                status, body = http_get(api.url(f"/v1/jobs/{job_id}"))
                assert status == 200 and json.loads(body)["state"] == "dead", body
        finally:
            api.close()

        # Requeueing restores the bytes without decoding them.
        assert _cli(env, "dlq", "requeue", "legacy", "legacy-hostile").returncode == 0
        assert await redis.get(job_key("legacy-hostile")) == hostile

        # The operator fixes the bug and requeues: the job runs again and completes.
        await redis.set("chaos:fixed", 1)
        done = _cli(env, "dlq", "requeue", "safe", "fixme")
        assert done.returncode == 0, done.stdout + done.stderr
        await wait_completed(redis, "safe", ["fixme"], within=15)
        assert not await redis.hexists(safe.dlq, "fixme")
        assert worker.alive()
        assert worker.stop(10) == 0
    finally:
        worker.close()
    assert not canary.exists(), "a hostile pickle was unpickled"
