"""Pure arithmetic on queue scores: priorities, readiness and retry backoff.

arq orders a queue's sorted set by the time (ms) at which each job may run. arqscale keeps that, and
adds priorities by giving each priority level its own band of scores, ``BAND`` ms wide::

    score = ready_at_ms + (priority - normal_priority) * BAND

The normal level is band 0, exactly where plain arq producers put their jobs. More urgent levels
sit in negative bands, so a worker that reads bands in ascending order takes urgent jobs first and
stays FIFO within a level. ``BAND`` (1e13 ms, the year 2286) exceeds any real timestamp, and ten
levels stay well inside the 2**53 range where doubles hold integers exactly.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from arqscale.core.spec import Backoff, QueueSpec

BAND = 10**13
# A running job stays in its queue's sorted set (arq's ``Job.result()`` and ``Job.status()`` look for it
# there) but is parked far above every band, at ``LEASED + its lease expiry`` (Redis ms): no pickup, count or
# list of ready or deferred jobs ever walks past it, and the parked entries themselves are the lease index (the
# sweep reads the expired ones by range; a heartbeat moves them forward). Its own score, its place in line, is in
# its ownership record (``keys``). Workers from before the lease moved here parked a job at ``PARK + its score``
# and kept its lease in the queue's ``active`` set; those entries still read (``unpark``) and are swept.
# Bands span at most +-1e14, so every parked score stays within 2**53, where doubles hold integers exactly, and
# above ``PARKED_FLOOR``; ``LEASED`` lies above every ``PARK + score``.
PARK = 2**52
PARKED_FLOOR = 2**51
LEASED = PARK + 2**49


def unpark(score: float) -> float:
    """A queue score as the job had it before it was taken, for the older parking (``PARK + score``); a score
    parked under a lease (``LEASED + expiry``) gives no place in line (see ``lease_of``): it is returned as is."""
    return score - PARK if PARKED_FLOOR <= score < LEASED else score


def lease_of(score: float) -> float | None:
    """The lease expiry (Redis ms) of a job parked under its lease, else None."""
    return score - LEASED if score >= LEASED else None


def now_ms() -> int:
    """The current time in ms, rounded as arq rounds it: with a floor instead, a job a plain arq producer
    enqueued in the same millisecond would look deferred by one millisecond."""
    return round(time.time() * 1000)


def time_ms(seconds: int | bytes, micros: int | bytes) -> int:
    """Redis' ``TIME`` reply in ms, rounded as ``now_ms`` rounds: so a time it stamped in this very
    millisecond is not later than "now" (a clean "older than 0 s" spared such a job)."""
    return round(int(seconds) * 1000 + int(micros) / 1000)


@dataclass(frozen=True, slots=True)
class Band:
    """Score range of one priority level: ready jobs score in [low, low + now], deferred above."""

    priority: int
    low: int

    @property
    def high(self) -> int:
        """Exclusive upper bound of the band."""
        return self.low + BAND

    def ready_max(self, now_ms: int) -> int:
        return self.low + now_ms


def band_offset(priority: int, spec: QueueSpec) -> int:
    return (priority - spec.normal_priority) * BAND


def bands(spec: QueueSpec) -> list[Band]:
    """All priority bands of a queue, most urgent first."""
    return [Band(p, band_offset(p, spec)) for p in range(spec.priority_levels)]


def check_priority(priority: int | None, spec: QueueSpec) -> int:
    """The priority to use, or ValueError naming the allowed range."""
    if priority is None:
        return spec.normal_priority
    if not 0 <= priority < spec.priority_levels:
        raise ValueError(
            f"priority {priority} is out of range for queue {spec.name!r}: use 0 (most urgent) "
            f"to {spec.priority_levels - 1}"
        )
    return priority


def job_score(ready_at_ms: int, priority: int, spec: QueueSpec) -> int:
    return ready_at_ms + band_offset(priority, spec)


def split_score(score: float, spec: QueueSpec) -> tuple[int, int]:
    """(priority, ready_at_ms) of a stored score."""
    s = int(score)
    normal = spec.normal_priority  # a property of the model: read once (a worker splits every job's score)
    offset = (s + BAND // 2) // BAND  # nearest band; ready times are far from the band edges
    priority = min(max(offset + normal, 0), spec.priority_levels - 1)
    return priority, s - (priority - normal) * BAND


def backoff_seconds(backoff: Backoff, retry_number: int, rand: random.Random | None = None) -> float:
    """Seconds to wait before retry ``retry_number`` (1 = the first retry)."""
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    if backoff.strategy == "fixed":
        base = backoff.delay
    else:
        base = min(backoff.delay * 2 ** (retry_number - 1), backoff.max_delay)
    if backoff.jitter:
        base += base * backoff.jitter * (rand or random).random()
    return base
