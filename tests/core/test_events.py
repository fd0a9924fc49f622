"""The event schema against a real redis-server: whatever a job id, an error text or a progress message holds,
the entry the scripts write reads back as the same values (capped where the schema caps them), and stream ids
are recognised exactly. Generated inputs (hypothesis) for each class."""

from __future__ import annotations

import json

from arq.connections import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from arqscale.core import event_stream
from arqscale.core.cancellation import cancel
from arqscale.core.events import ERROR_EVENT_CHARS, EVENT_NAMES, MESSAGE_EVENT_CHARS, Event, is_stream_id
from arqscale.core.spec import parse_queues
from arqscale.worker.pickup import Finish, QueueOps

SPEC = parse_queues({"queues": {"q": {"functions": ["tests.tasks.send_email"], "max_tries": 3}}})["q"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
# Any id plain arq accepts (issue 10): any text, read back from Redis with surrogateescape.
job_ids = st.text(min_size=1, max_size=40).filter(lambda t: t not in (".", ".."))


@SETTINGS
@given(job_id=job_ids, error=st.text(max_size=1500), message=st.text(max_size=700))
async def test_any_id_error_and_message_read_back(redis: Redis, job_id: str, error: str, message: str) -> None:
    await redis.flushdb()
    arq = ArqRedis(connection_pool=redis.connection_pool, job_serializer=lambda d: json.dumps(d).encode())
    await arq.enqueue_job("send_email", _job_id=job_id, _queue_name=SPEC.queue_key)
    ops = QueueOps(redis, SPEC, "w-1")
    [job] = (await ops.pickup(1, "w-1.1")).jobs
    await ops.progress(job.job_id, job.job_try, "{}", 60_000, 42.5, message)
    stale = await ops.finish([Finish("retry", job.job_id, 0, "{}", token=job.token, job_try=1, ran_ms=7, note=error)])
    assert stale == []
    events = await event_stream.history(redis, "q")
    assert [e.event for e in events] == ["waiting", "active", "progress", "failed", "retrying"]
    assert {e.job for e in events} == {job_id}
    progress, failed = events[2], events[3]
    assert progress.progress == 42.5 and progress.message == _sent(message, MESSAGE_EVENT_CHARS)
    assert failed.error == _sent(error, ERROR_EVENT_CHARS) and failed.duration_ms == 7 and failed.worker == "w-1"
    # Every parsed event has a JSON form.
    for event in events:
        json.dumps(event.as_dict())


def _sent(text: str, cap: int) -> str | None:
    """What the event carries: the first ``cap`` characters as UTF-8 (unencodable ones replaced); none if empty."""
    sent = text[:cap].encode("utf-8", "replace").decode("utf-8", "surrogateescape")
    return sent or None


@SETTINGS
@given(job_id=job_ids)
async def test_a_cancelled_waiting_job_of_any_id(redis: Redis, job_id: str) -> None:
    await redis.flushdb()
    arq = ArqRedis(connection_pool=redis.connection_pool, job_serializer=lambda d: json.dumps(d).encode())
    await arq.enqueue_job("send_email", _job_id=job_id, _queue_name=SPEC.queue_key, _defer_by=60)
    await cancel(redis, SPEC, job_id)
    [event] = await event_stream.history(redis, "q")
    assert (event.event, event.job, event.reason) == ("cancelled", job_id, "cancelled on request")
    assert (await event_stream.totals(redis, "q"))["cancelled"] == 1


@given(ms=st.integers(0, 2**64 - 1), seq=st.integers(0, 2**64 - 1))
def test_every_stream_id_is_recognised(ms: int, seq: int) -> None:
    assert is_stream_id(f"{ms}-{seq}")


@given(text=st.text(max_size=45))
def test_what_is_not_a_stream_id_is_refused(text: str) -> None:
    ms, dash, seq = text.partition("-")
    valid = bool(dash) and ms.isascii() and seq.isascii() and ms.isdigit() and seq.isdigit()
    valid = valid and len(ms) <= 20 and len(seq) <= 20 and int(ms) < 2**64 and int(seq) < 2**64
    assert is_stream_id(text) == valid


@given(
    fields=st.dictionaries(
        st.sampled_from(["event", "job", "at", "try", "worker", "delay_ms", "error", "progress", "x-new"]),
        st.binary(max_size=20),
    )
)
def test_parse_never_fails_on_odd_entries(fields: dict[str, bytes]) -> None:
    event = Event.parse("q", b"1-0", fields)
    assert event.id == "1-0" and event.queue == "q"
    json.dumps(event.as_dict())


def test_the_event_names() -> None:
    assert EVENT_NAMES == (
        "waiting", "delayed", "active", "progress", "retrying", "completed", "failed", "dead", "cancelled", "requeued",
    )  # fmt: skip
