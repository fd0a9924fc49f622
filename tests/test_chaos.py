"""Chaos: no job is lost while workers are drained, killed and started, and Redis restarts under them.

Real processes only: a private redis-server with AOF, four or more ``arqscale worker --queue chaos``
subprocesses, the ``arqscale exporter``. The harness is in ``chaos_tasks`` (bench/soak.py runs it
longer). Runs in the default ``pytest`` run (about a minute); ``-m "not slow"`` leaves it out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chaos_tasks import TABLE_HEADER, ChaosConfig, ChaosReport, command_exists, run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

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


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ChaosReport:
    if not command_exists("worker"):
        pytest.skip("`arqscale worker` has not landed yet")
    workdir: Path = tmp_path_factory.mktemp("chaos")
    result = run_chaos(workdir, CONFIG)
    (workdir / "report.json").write_text(json.dumps(result.summary(), indent=2, default=str))
    print(f"\nchaos figures ({workdir}):\n{TABLE_HEADER}\n{result.markdown_row('pytest')}")
    print(json.dumps(result.summary(), default=str))
    return result


def test_every_job_completed_and_none_lost(report: ChaosReport) -> None:
    assert report.lost == 0, report.unexplained
    assert report.completed == CONFIG.jobs


def test_the_chaos_happened(report: ChaosReport) -> None:
    assert report.redis_restarts == CONFIG.redis_restarts
    assert report.kills >= 3 and report.drains >= 3, (report.kills, report.drains)
    assert report.workers_started >= CONFIG.workers + report.kills + report.drains - 2


def test_every_rerun_is_explained_by_a_kill(report: ChaosReport) -> None:
    """Duplicates only where a SIGKILLed worker had the job in flight, never after a clean drain."""
    assert report.unexplained == []
    assert report.reruns_by_cause["drain"] == 0, "a drain within drain_timeout must not cut a job short"
    # Each kill can repeat at most the jobs that worker had in flight.
    assert report.reruns_by_cause["sigkill"] <= report.kills * CONFIG.concurrency
    assert report.duplicates <= report.extra_runs


def test_a_short_redis_restart_repeats_no_job(report: ChaosReport) -> None:
    """Leases are renewed every lease/3: an outage shorter than 2/3 of the lease lets none of them lapse.

    (Longer outages do: the job runs again elsewhere and the cut-off worker finishes its copy too;
    bench/soak.py measures that case, docs/reliability.md gives the figures.)
    """
    margin = CONFIG.lease_seconds * 2 / 3 - 0.2
    if max(report.outage_seconds) >= margin:
        pytest.skip(f"the restart took {max(report.outage_seconds):.2f}s, not under {margin:.2f}s (slow machine)")
    assert report.reruns_by_cause["redis_outage"] == 0


def test_a_killed_workers_jobs_run_again_within_the_lease(report: ChaosReport) -> None:
    assert report.recovery_waits, "no kill hit a running job: raise the load or the kill share"
    # The bound: the lease (renewed every lease/3, so it runs out at most lease_seconds after the kill)
    # plus one poll and a pickup. arq alone would wait for the job timeout's in-progress expiry.
    bound = CONFIG.lease_seconds + CONFIG.poll_interval + 0.5
    assert report.recovery_max <= bound, sorted(report.recovery_waits)[-5:]


def test_drains_finish_running_jobs_within_the_drain_timeout(report: ChaosReport) -> None:
    assert report.drain_max <= CONFIG.drain_timeout + 2.0


def test_nothing_left_behind(report: ChaosReport) -> None:
    assert report.leftovers == {
        "queue": 0,
        "active": 0,
        "dlq": 0,
        "in_progress_keys": 0,
        "job_keys": 0,
        "retry_keys": 0,
    }


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


def test_the_exporter_survived_and_reads_zero(report: ChaosReport) -> None:
    if not command_exists("exporter"):
        pytest.skip("`arqscale exporter` has not landed yet")
    assert "exporter_exited" not in report.exporter, "the exporter died during the chaos (Redis restart?)"
    assert report.exporter == {"waiting": 0, "active": 0, "delayed": 0, "paused": 0, "failed": 0}
