"""The chaos harness's accounting (tests/chaos_tasks.py): which reruns count as explained. A rerun is
explained by a kill, a drain, a Redis outage, or a worker that said it stalled past its lease; anything
else is a protocol bug the chaos tests must report."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from arqscale.worker.loop import Worker
from chaos_tasks import Run, analyse, dropped_outcomes


def _stalled_worker_log(caplog: pytest.LogCaptureFixture, job_ids: list[str]) -> str:
    """What a worker whose outcomes Redis refused writes: its own method, with only its metric stood in."""
    stand_in = SimpleNamespace(metrics=SimpleNamespace(stale_outcomes_q=SimpleNamespace(inc=lambda n: None)))
    with caplog.at_level(logging.WARNING, logger="arqscale.worker"):
        Worker._stale(stand_in, job_ids, False)  # type: ignore[arg-type]
    return "\n".join(f"2026-12-05 08:00:00 WARNING {r.name}: {r.getMessage()}" for r in caplog.records)


def test_the_worker_log_names_the_jobs_whose_outcome_was_dropped(caplog: pytest.LogCaptureFixture) -> None:
    log = "worker ready\n" + _stalled_worker_log(caplog, ["c0004630", "c0000017"]) + "\njob c9 done"
    assert dropped_outcomes(log) == {"c0004630", "c0000017"}
    assert dropped_outcomes("worker ready\njob c9 done") == set()


def test_a_rerun_is_explained_only_by_a_stall_its_own_worker_reported(caplog: pytest.LogCaptureFixture) -> None:
    runs = [Run("a", 1, 10.0, 1, end=12.0), Run("a", 2, 14.0, 2, end=14.1), Run("b", 1, 10.0, 1, end=12.0)]
    runs += [Run("b", 2, 14.0, 2, end=14.1)]
    reported = {1: dropped_outcomes(_stalled_worker_log(caplog, ["a"]))}
    analysis = analyse(runs, kills=[], drained={}, outages=[], lease_seconds=2.0, dropped=reported)
    assert analysis.causes["reported_stall"] == 1
    assert len(analysis.unexplained) == 1 and analysis.unexplained[0].startswith("b: ")
    # Another worker's report explains nothing, and without any report both reruns stay unexplained.
    elsewhere = analyse(runs, kills=[], drained={}, outages=[], lease_seconds=2.0, dropped={2: {"a", "b"}})
    assert elsewhere.causes["reported_stall"] == 0 and len(elsewhere.unexplained) == 2
    assert len(analyse(runs, kills=[], drained={}, outages=[], lease_seconds=2.0).unexplained) == 2
