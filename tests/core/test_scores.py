"""Priority bands and backoff arithmetic (pure, no Redis)."""

from __future__ import annotations

import random

import pytest

from arqscale.core import scores
from arqscale.core.spec import Backoff, parse_queues

SPEC = parse_queues({"queues": {"q": {"functions": ["a.b"], "priority_levels": 5}}})["q"]
NOW = 1_800_000_000_000


def test_normal_priority_is_the_plain_arq_band() -> None:
    assert SPEC.normal_priority == 2
    assert scores.job_score(NOW, 2, SPEC) == NOW


@pytest.mark.parametrize("priority", range(5))
def test_score_round_trips(priority: int) -> None:
    score = scores.job_score(NOW + 1234, priority, SPEC)
    assert scores.split_score(float(score), SPEC) == (priority, NOW + 1234)


def test_urgent_band_sorts_first_even_when_enqueued_later() -> None:
    urgent_later = scores.job_score(NOW + 60_000, 0, SPEC)
    normal_now = scores.job_score(NOW, 2, SPEC)
    assert urgent_later < normal_now
    ordered = [b.priority for b in scores.bands(SPEC)]
    assert ordered == [0, 1, 2, 3, 4]


def test_ready_range_of_a_band_excludes_deferred_jobs() -> None:
    band = scores.bands(SPEC)[0]
    deferred = scores.job_score(NOW + 1, 0, SPEC)
    ready = scores.job_score(NOW, 0, SPEC)
    assert band.low <= ready <= band.ready_max(NOW) < deferred < band.high


def test_check_priority_names_the_range() -> None:
    assert scores.check_priority(None, SPEC) == 2
    with pytest.raises(ValueError, match="use 0 \\(most urgent\\) to 4"):
        scores.check_priority(5, SPEC)


def test_exponential_backoff_grows_and_caps() -> None:
    backoff = Backoff(strategy="exponential", delay=1, max_delay=10, jitter=0)
    assert [scores.backoff_seconds(backoff, n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_fixed_backoff_with_jitter_stays_in_bounds() -> None:
    backoff = Backoff(strategy="fixed", delay=2, jitter=0.5)
    rand = random.Random(7)
    delays = [scores.backoff_seconds(backoff, 3, rand) for _ in range(200)]
    assert all(2 <= d <= 3 for d in delays)
    assert max(delays) - min(delays) > 0.5  # jitter really spreads retries out


def test_retry_number_starts_at_one() -> None:
    with pytest.raises(ValueError):
        scores.backoff_seconds(Backoff(), 0)


def test_now_ms_rounds_like_arq(monkeypatch: pytest.MonkeyPatch) -> None:
    # arq stamps jobs with round(time * 1000) (arq.utils.timestamp_ms); a floor here made a job that a
    # plain arq producer had just enqueued look deferred by a millisecond.
    monkeypatch.setattr("time.time", lambda: 1_800_000_000.0006)
    assert scores.now_ms() == 1_800_000_000_001
