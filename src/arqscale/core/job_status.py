"""A job's state, found by id across every configured queue in one pipelined round trip.

The order of precedence is the one in docs/design.md: dead (in a queue's dead-letter store) >
completed/failed (arq's result key, by its success flag) > active (parked in its queue under a live
lease, see ``scores.LEASED``; or, from workers before, parked with a live lease in ``active``) > queued
(parked with an expired lease: the next pickup sweeps it back) > active (in the queue and an in-progress
key exists: a worker that keeps running jobs there, such as arq's own) > deferred (ready later) > queued >
queued and held (in its key's waiting set, ``g:held`` names its key: a per-key limit holds it back) > not_found.
"Now" is Redis' clock, read in the same round trip; a held job's place in line (its score in
``g:wait:<key>``) takes a second round trip, only when a job is held.

Payloads and results of pickle queues are never unpickled: their function name, timestamps and
success flag are read from the pickle's opcodes (``pickle_peek``), and the arguments, result and
error are reported as not shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from arqscale.core import keys, scores
from arqscale.core.models import DeadJob, JobState, JobStatus, Progress
from arqscale.core.pickle_peek import PeekError, looks_pickled, peek
from arqscale.core.spec import QueueSpec

PICKLE_NOTE = "payload not shown (pickle queue)"


@dataclass(frozen=True, slots=True)
class RawJob:
    """Everything Redis holds about one job id, as read by one pipeline."""

    dead: Mapping[str, bytes]  # queue name -> DeadJob JSON
    scores: Mapping[str, float]  # queue name -> score in that queue's sorted set
    payload: bytes | None
    result: bytes | None
    in_progress: bool
    tries: int
    progress: bytes | None
    error: bytes | None
    leases: Mapping[str, float] = field(default_factory=dict)  # queue name -> lease in ``active`` (older workers')
    held: Mapping[str, bytes] = field(default_factory=dict)  # queue name -> the key whose limit holds it back
    held_scores: Mapping[str, float] = field(default_factory=dict)  # queue name -> its score in g:wait:<key>
    group: bytes | None = None  # the key given at enqueue (arqscale:group:<id>)
    own_score: float | None = None  # a running job's place in line, from its ownership record


@dataclass(frozen=True, slots=True)
class Decoded:
    data: dict[Any, Any]
    pickled: bool


def decode_stored(raw: bytes | None) -> Decoded | None:
    """A payload or result as a dict, without unpickling; None when unreadable."""
    if raw is None:
        return None
    try:
        if looks_pickled(raw):
            value = peek(raw)
            return Decoded(value, True) if isinstance(value, dict) else None
        value = json.loads(raw)
    except (PeekError, ValueError, RecursionError):
        return None
    return Decoded(value, False) if isinstance(value, dict) else None


def ms_to_s(value: Any) -> float | None:
    return value / 1000 if isinstance(value, int | float) and not isinstance(value, bool) else None


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_progress(raw: bytes | None) -> Progress | None:
    if raw is None:
        return None
    try:
        return Progress.model_validate_json(raw)
    except ValidationError:
        return None


def last_error(raw: bytes | None) -> str | None:
    """``arqscale:error:<id>`` holds JSON ``{error, attempt, at}``; accept a bare string too."""
    if raw is None:
        return None
    decoded = raw.decode(errors="replace")
    try:
        value = json.loads(decoded)
    except ValueError:
        return decoded
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"])
    return decoded


def _from_dead(job_id: str, queue: str, raw: bytes, base: dict[str, Any]) -> JobStatus:
    try:
        entry = DeadJob.model_validate_json(raw)
    except ValidationError:
        return JobStatus(**base, job_id=job_id, state=JobState.DEAD, queue=queue, error="unreadable dead-letter entry")
    return JobStatus(
        **base,
        job_id=job_id,
        state=JobState.DEAD,
        queue=queue,
        function=entry.function,
        priority=entry.priority,
        attempts=entry.attempts,
        error=entry.error,
        args=entry.args,
        kwargs=entry.kwargs,
        enqueued_at=entry.enqueued_at,
        finished_at=entry.failed_at,
    )


def from_result(job_id: str, result: Decoded, specs: Mapping[str, QueueSpec], base: dict[str, Any]) -> JobStatus:
    d = result.data
    success = d.get("s") is True
    cancelled = not success and d.get("x") == "cancelled"
    by_key = {s.queue_key: s.name for s in specs.values()}
    queue_key = text(d.get("q"))
    value = d.get("r")
    status = JobStatus(
        **base,
        job_id=job_id,
        state=JobState.COMPLETED if success else JobState.CANCELLED if cancelled else JobState.FAILED,
        queue=by_key.get(queue_key or "", queue_key),
        function=text(d.get("f")),
        attempts=d["t"] if isinstance(d.get("t"), int) else 0,
        enqueued_at=ms_to_s(d.get("et")),
        started_at=ms_to_s(d.get("st")),
        finished_at=ms_to_s(d.get("ft")),
    )
    if not result.pickled:
        status.args, status.kwargs = d.get("a"), d.get("k")
    if result.pickled:
        status.note = PICKLE_NOTE
        if cancelled:
            status.error = "cancelled"
        elif not success:
            # The exception itself is pickled; a plain string error is data and safe to show.
            status.error = value if isinstance(value, str) else "the job failed (error not shown: pickle queue)"
    elif success:
        status.result = value
    else:
        status.error = value if isinstance(value, str) else json.dumps(value)
    return status


def _queue_state(raw: RawJob, queue: str, queued: float, ready_ms: int, now_ms: int) -> JobState:
    lease = scores.lease_of(queued)
    if lease is None and queued >= scores.PARKED_FLOOR:
        lease = raw.leases.get(queue)
    if lease is not None:
        # Running; an expired lease means its worker died or stalled, and the next pickup runs it again.
        return JobState.ACTIVE if lease > now_ms else JobState.QUEUED
    if raw.in_progress:
        return JobState.ACTIVE  # held by a worker that keeps running jobs in the queue (arq's own)
    return JobState.DEFERRED if ready_ms > now_ms else JobState.QUEUED


def resolve(job_id: str, raw: RawJob, specs: Mapping[str, QueueSpec], now_ms: int) -> JobStatus:
    """The job's status from what Redis holds (pure: unit-testable without Redis)."""
    base: dict[str, Any] = {"progress": parse_progress(raw.progress)}
    for queue, entry in raw.dead.items():
        return _from_dead(job_id, queue, entry, base)
    result = decode_stored(raw.result)
    if result is not None:
        return from_result(job_id, result, specs, base)
    group = raw.group.decode(errors="replace") if raw.group is not None else None
    queued_in = dict(raw.scores)
    held = False
    if not queued_in:
        for queue, key in raw.held.items():
            # Held back by its key's limit: out of the queue, in the key's waiting set under its queue score.
            queued_in[queue] = raw.held_scores.get(queue, float(now_ms))
            held, group = True, key.decode(errors="replace")
            break
    for queue, queued in queued_in.items():
        spec = specs[queue]
        place = scores.unpark(queued)
        if scores.lease_of(queued) is not None:  # running: its place in line is in its ownership record
            place = raw.own_score if raw.own_score is not None else float(now_ms)
        priority, ready_ms = scores.split_score(place, spec)
        # A held job was ready when it was held back: queued, never deferred.
        state = JobState.QUEUED if held else _queue_state(raw, queue, queued, ready_ms, now_ms)
        payload = decode_stored(raw.payload)
        status = JobStatus(
            **base,
            job_id=job_id,
            state=state,
            queue=queue,
            priority=priority,
            attempts=raw.tries,
            error=last_error(raw.error),
            scheduled_for=ready_ms / 1000,
            held=held,
            group=group,
        )
        if payload is not None:
            status.function = text(payload.data.get("f"))
            status.enqueued_at = ms_to_s(payload.data.get("et"))
            if payload.pickled:
                status.note = PICKLE_NOTE
            else:
                status.args, status.kwargs = payload.data.get("a"), payload.data.get("k")
        elif raw.payload is not None:
            status.note = "payload unreadable"
        elif state is not JobState.ACTIVE:
            status.note = "payload missing: a worker will move this job to the dead-letter store"
        if held and status.note is None:
            status.note = f"held back by the limit of key {group!r}: it runs when the key has room"
        return status
    return JobStatus(job_id=job_id, state=JobState.NOT_FOUND)


def _owning_set(per_queue: Sequence[Any], own: Sequence[Sequence[Any]]) -> Sequence[Any]:
    """The job's own keys' values: the one set read (arq's layout), or in the cluster layout the set of
    the queue that holds the job (in its sorted set, running, held or dead), else of one that has any."""
    if len(own) <= 1:
        return own[0] if own else [None] * 7
    for j, values in enumerate(own):
        if any(v is not None for v in per_queue[4 * j : 4 * j + 4]):
            return values
    for values in own:
        if any(v is not None for v in values):
            return values
    return own[0]


class JobStatusReader:
    """Reads job statuses for the queues it knows: one pipelined round trip per job."""

    def __init__(self, redis: Redis, specs: Mapping[str, QueueSpec]) -> None:
        self.redis = redis
        self.specs = {name: s for name, s in specs.items() if s.backend == "arq"}

    async def read(self, job_id: str, now_ms: int | None = None) -> JobStatus:
        return (await self.read_many([job_id], now_ms))[0]

    async def read_many(self, job_ids: Sequence[str], now_ms: int | None = None) -> list[JobStatus]:
        """Statuses of many jobs, still in one round trip."""
        names = list(self.specs)
        qkeys = [keys.QueueKeys.of(self.specs[n], self.redis) for n in names]
        # A job's own keys (payload, result, ...) are arq's, the same whatever its queue; in the cluster
        # layout they carry the queue's hash tag, so each queue's are read and the queue that has the job wins.
        per_job_sets = qkeys if qkeys and qkeys[0].cluster else qkeys[:1]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.execute_command("TIME")  # by name: a cluster pipeline refuses pipe.time()
            for job_id in job_ids:
                for k in qkeys:
                    pipe.hget(k.dlq, job_id)
                    pipe.zscore(k.queue, job_id)
                    pipe.zscore(k.active, job_id)
                    pipe.hget(k.groups + "held", job_id)
                for k in per_job_sets:
                    pipe.get(k.group(job_id))
                    pipe.get(k.job(job_id))
                    pipe.get(k.result(job_id))
                    pipe.get(k.in_progress(job_id))
                    pipe.get(k.retry(job_id))
                    pipe.get(k.progress(job_id))
                    pipe.get(k.error(job_id))
            replies = await pipe.execute()
        seconds, micros = replies.pop(0)
        now = scores.time_ms(seconds, micros) if now_ms is None else now_ms
        n = 4 * len(names)
        per_job = n + 7 * len(per_job_sets)
        raws = []
        for i in range(len(job_ids)):
            r = replies[i * per_job : (i + 1) * per_job]
            per_queue = r[:n]
            own = [r[n + 7 * j : n + 7 * (j + 1)] for j in range(len(per_job_sets))]
            group, payload, result, in_progress, tries, progress, error = _owning_set(per_queue, own)
            raws.append(
                RawJob(
                    dead={q: per_queue[4 * j] for j, q in enumerate(names) if per_queue[4 * j] is not None},
                    scores={q: per_queue[4 * j + 1] for j, q in enumerate(names) if per_queue[4 * j + 1] is not None},
                    leases={q: per_queue[4 * j + 2] for j, q in enumerate(names) if per_queue[4 * j + 2] is not None},
                    held={q: per_queue[4 * j + 3] for j, q in enumerate(names) if per_queue[4 * j + 3] is not None},
                    group=group,
                    payload=payload,
                    result=result,
                    in_progress=in_progress is not None,
                    # A running job's try is in its ownership record; the counter holds the tries before it.
                    tries=keys.running_try(in_progress) or (int(tries) if tries is not None and tries.isdigit() else 0),
                    own_score=keys.record_score(in_progress),
                    progress=progress,
                    error=error,
                )
            )
        raws = await self._held_places(job_ids, raws, qkeys, names)
        return [resolve(job_id, raw, self.specs, now) for job_id, raw in zip(job_ids, raws, strict=True)]

    async def _held_places(
        self, job_ids: Sequence[str], raws: list[RawJob], qkeys: list[keys.QueueKeys], names: list[str]
    ) -> list[RawJob]:
        """Held jobs' scores in their keys' waiting sets (their priority and ready time): one more round trip,
        only when a job is held (the key is known only from the first)."""
        wanted = [(i, q, key) for i, raw in enumerate(raws) for q, key in raw.held.items()]
        if not wanted:
            return raws
        prefix = {n: k.groups for n, k in zip(names, qkeys, strict=True)}
        async with self.redis.pipeline(transaction=False) as pipe:
            for i, q, key in wanted:
                pipe.zscore(prefix[q].encode() + b"wait:" + key, job_ids[i])
            found = await pipe.execute()
        places: dict[int, dict[str, float]] = {}
        for (i, q, _), score in zip(wanted, found, strict=True):
            if score is not None:
                places.setdefault(i, {})[q] = score
        return [replace(raw, held_scores=places.get(i, {})) for i, raw in enumerate(raws)]
