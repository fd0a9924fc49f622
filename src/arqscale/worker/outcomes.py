"""What a worker writes when a try ends: pure functions from a picked job to a ``pickup.Finish`` record.

No I/O and no clock of their own (``now_ms`` is an argument, and only dates what people read: queue
scores are computed by the scripts on Redis' clock), so records and dead-letter entries are unit-tested
without Redis. The worker sends the records in batches
(``pickup.FINISH_LUA``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arq.jobs import DeserializationError
from arq.worker import JobExecutionFailed

from arqscale.core import cancellation, scores, serializers, tracing
from arqscale.core.models import DeadJob
from arqscale.core.pickle_peek import looks_pickled
from arqscale.core.safe_data import ERROR_CHARS, PREVIEW_BYTES, TRACEBACK_CHARS, clipped, preview
from arqscale.core.spec import QueueSpec
from arqscale.worker.pickup import Finish, Picked


@dataclass(slots=True)  # not frozen, as pickup.Picked: made per job
class Decoded:
    """A job payload in arq's format, decoded."""

    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    enqueue_try: int | None
    enqueue_ms: int
    trace: dict[str, str] | None = None  # W3C trace headers our producer put into the payload (tracing on)


def decode_payload(payload: bytes, loads: Callable[[bytes], Any]) -> Decoded:
    """arq's ``deserialize_job_raw``, plus the trace context our producer may have added (``tracing``)."""
    try:
        d = loads(payload)
        decoded = Decoded(d["f"], d["a"], d["k"], d["t"], d["et"])
    except Exception as exc:
        raise DeserializationError("unable to deserialize job") from exc
    headers = tracing.carried(d) if isinstance(d, dict) else None
    return dataclasses.replace(decoded, trace=headers) if headers else decoded


def describe(exc: BaseException) -> str:
    """``str(exc)``, which runs the task's own code: it may raise, or return text that is not Unicode."""
    try:
        return str(exc)
    except Exception as failed:
        return f"<str() of the exception failed: {type(failed).__name__}>"


def error_text(raw: bytes | None) -> str:
    """The message of an ``arqscale:error:<id>`` value (JSON with an ``error`` field)."""
    if raw is None:
        return "none recorded"
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace")


def retry(
    spec: QueueSpec,
    job: Picked,
    job_try: int,
    error: str,
    tb: str | None,
    now_ms: int,
    *,
    defer_ms: int | None = None,
    rand: random.Random | None = None,
) -> tuple[Finish, int]:
    """The retry record and the delay chosen, in ms. The script scores it ``now + delay`` in the job's own
    band by Redis' clock; ``now_ms`` (this worker's clock) only dates the error for people reading it."""
    if defer_ms is None:
        defer_ms = int(scores.backoff_seconds(spec.backoff, job_try, rand) * 1000)
    # Capped and escaped like a dead-letter entry's: the error text comes from the task (any str at all).
    error, tb = clipped(error, ERROR_CHARS), clipped(tb, TRACEBACK_CHARS) if tb is not None else None
    last_error = json.dumps({"error": error, "attempt": job_try, "at": now_ms / 1000, "traceback": tb})
    return Finish("retry", job.job_id, max(defer_ms, 0), last_error, token=job.token, note=error), defer_ms


def dead(
    spec: QueueSpec,
    job: Picked,
    decoded: Decoded | None,
    error: str,
    tb: str | None,
    now_ms: int,
    *,
    attempts: int | None = None,
    exc: BaseException | None = None,
    start_ms: int | None = None,
) -> Finish:
    """The dead-letter record: a ``DeadJob`` with everything needed to read and requeue the job (``a``), and
    the failed result arq's ``Job.result()`` reads (``b``, see ``failed_result``)."""
    priority, _ = scores.split_score(job.score, spec)
    tries = job.job_try if attempts is None else attempts
    # Every text and value below may come from a hostile producer or task: each is made encodable and
    # bounded (``safe_data``), so the record always reaches Redis and the slot is freed. The arguments are
    # kept as a preview only: ``payload_b64`` holds the job itself, once, for requeue.
    error, tb = clipped(error, ERROR_CHARS), clipped(tb, TRACEBACK_CHARS) if tb is not None else None
    entry = DeadJob(
        job_id=job.job_id,
        queue=spec.name,
        function=clipped(decoded.function, 200) if decoded else None,
        args=preview(readable(spec, decoded.args)) if decoded else None,
        kwargs=preview(readable(spec, decoded.kwargs)) if decoded else None,
        attempts=tries,
        error=error,
        traceback=tb,
        enqueued_at=decoded.enqueue_ms / 1000 if decoded else None,
        failed_at=now_ms / 1000,
        priority=priority,
        payload_b64=base64.b64encode(job.payload).decode() if job.payload is not None else None,
    )
    try:
        a = entry.model_dump_json()
    except Exception as dump_error:  # not expected after the above; still, a plain entry beats a jammed slot
        note = f"; the entry's details could not be stored ({type(dump_error).__name__})"
        plain = {"args": None, "kwargs": None, "traceback": None, "error": error + note}
        a = entry.model_copy(update=plain).model_dump_json()
    result = failed_result(
        spec, job.job_id, decoded, tries, error, exc, now_ms if start_ms is None else start_ms, now_ms, job.payload
    )
    return Finish("dead", job.job_id, a, result, token=job.token, note=error)


def unstorable(spec: QueueSpec, job: Picked, record: Finish, exc: Exception, now_ms: int) -> Finish:
    """The dead record that replaces a ``record`` whose fields cannot be sent to Redis: the job ends dead
    with a plain error instead of jamming its slot (the record is never lost, and never retried as is)."""
    error = f"the outcome of this try ({record.kind}) could not be stored: {type(exc).__name__}: {exc}"
    return dead(spec, job, None, error, None, now_ms)


def failed_result(
    spec: QueueSpec,
    job_id: str,
    decoded: Decoded | None,
    job_try: int,
    error: str,
    exc: BaseException | None,
    start_ms: int,
    now_ms: int,
    payload: bytes | None = None,
) -> bytes:
    """The ``arq:result:<id>`` of a dead job, as arq writes one after the last try (success False).

    JSON queues: ``r`` is the error text (arq's ``Job.result()`` raises ``SerializationError`` with it).
    Pickle queues: the task's exception when it survives a pickle round trip, else arq's
    ``JobExecutionFailed(error)``. Empty (write none) when ``retention.failed_seconds`` is 0.

    A pickled ``payload`` that a JSON queue could not decode came from a plain arq producer (pickle is
    arq's default), whose client reads results with ``pickle.loads``: its result is pickled too, so
    ``Job.result()`` raises ``JobExecutionFailed`` with the real error instead of arq's
    ``DeserializationError``. Only the dict built here is pickled; the payload is never unpickled
    (``looks_pickled`` reads its first byte).
    """
    if spec.retention.failed_seconds <= 0:
        return b""
    serializer = spec.serializer
    if serializer == "json" and decoded is None and payload is not None and looks_pickled(payload):
        serializer = "pickle"
    value: Any = error
    # arq's failed result repeats the arguments; a large payload is already stored once, keep it once.
    small = payload is None or len(payload) <= PREVIEW_BYTES
    if serializer == "pickle":
        value = JobExecutionFailed(error)
        if isinstance(exc, Exception) and _round_trips(exc):
            value = exc
    data = {
        "t": job_try,
        "f": decoded.function if decoded else "<unknown>",
        "a": decoded.args if decoded and small else (),
        "k": decoded.kwargs if decoded and small else {},
        "et": decoded.enqueue_ms if decoded else 0,
        "s": False,
        "r": value,
        "st": start_ms,
        "ft": now_ms,
        "q": spec.queue_key,
        "id": job_id,
    }
    dumps, _ = serializers.for_queue(serializer)
    try:
        return dumps(data)
    except Exception:  # arguments that no longer serialize: keep the error, drop them
        return dumps(data | {"a": (), "k": {}, "r": error if serializer == "json" else JobExecutionFailed(error)})


def _round_trips(exc: Exception) -> bool:
    """An exception arq's client can unpickle (a custom ``__init__`` signature often cannot be rebuilt)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


def cancelled(spec: QueueSpec, job: Picked, reason: str, now_ms: int, start_ms: int = 0) -> Finish:
    """The record of a job cancelled on request (before it ran, or while it ran): arq's cancelled result."""
    keep = spec.retention.failed_seconds > 0
    result = cancellation.cancelled_result(spec, job.job_id, job.payload, job.job_try, reason, now_ms, start_ms)
    return Finish("cancel", job.job_id, result if keep else b"", token=job.token, note=reason)


def back(job: Picked, reason: str = "drain") -> Finish:
    """Put a cut-short (or never started) job back under its own queue score (its place in line), its try
    counter back to before this try. ``reason``: its ``requeued`` event's."""
    return Finish("back", job.job_id, job.job_try - 1, token=job.token, note=reason)


def readable(spec: QueueSpec, value: Any) -> Any:
    """Arguments as the dead-letter store shows them: the values (json queues) or their reprs (pickle queues).

    Reprs keep the store data-only: the API and the dlq tools never unpickle.
    """
    if spec.serializer == "json":
        return list(value) if isinstance(value, tuple) else value
    if isinstance(value, dict):
        return {str(k): repr(v) for k, v in value.items()}
    return [repr(v) for v in value]
