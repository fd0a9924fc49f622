"""The records a worker writes when a try ends (pure: no Redis, the clock is an argument).

Queue scores are not here: the finish script computes them on Redis' clock (tests/worker/test_ownership.py).
"""

from __future__ import annotations

import base64
import json
import pickle
import random
import time

from arq.worker import JobExecutionFailed
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from arqscale.core import scores
from arqscale.core.models import DeadJob
from arqscale.core.pickle_peek import looks_pickled
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.worker import outcomes
from arqscale.worker.pickup import LANES, WORKER_LIBRARY, Finish, FinishKind, Picked, QueueOps, parse_pickup

NOW = 1_800_000_000_000


def spec(**settings: object) -> QueueSpec:
    return parse_queues({"queues": {"q": {"functions": ["worker_tasks.add"], **settings}}})["q"]


def picked(s: QueueSpec, priority: int, job_try: int = 1, payload: bytes | None = b'{"f":"add"}') -> Picked:
    score = scores.job_score(NOW - 5_000, priority, s)
    return Picked(job_id="j1", payload=payload, job_try=job_try, score=score, last_error=None, token="w.7")


def test_retry_carries_the_backoff_and_the_token() -> None:
    s = spec(priority_levels=5, backoff={"strategy": "fixed", "delay": 2, "jitter": 0})
    record, delay = outcomes.retry(s, picked(s, priority=4), 1, "ValueError: x", "tb", NOW)
    assert (record.kind, record.job_id, record.token, delay, record.a) == ("retry", "j1", "w.7", 2_000, 2_000)
    assert json.loads(record.b) == {"error": "ValueError: x", "attempt": 1, "at": NOW / 1000, "traceback": "tb"}


def test_retry_backoff_grows_with_the_try_and_honours_an_explicit_delay() -> None:
    s = spec(backoff={"strategy": "exponential", "delay": 1, "max_delay": 5, "jitter": 0.5})
    rand = random.Random(7)
    delays = [outcomes.retry(s, picked(s, 1), n, "e", None, NOW, rand=rand)[1] for n in (1, 2, 3, 4)]
    assert 1_000 <= delays[0] <= 1_500 and 2_000 <= delays[1] <= 3_000 and 4_000 <= delays[2] <= 6_000
    assert 5_000 <= delays[3] <= 7_500  # capped at max_delay before the jitter
    record, delay = outcomes.retry(s, picked(s, 0), 1, "e", None, NOW, defer_ms=42_000)
    assert delay == 42_000 and record.a == 42_000
    assert outcomes.retry(s, picked(s, 0), 1, "e", None, NOW, defer_ms=-5)[0].a == 0  # never before now


def test_dead_entry_keeps_everything_and_stays_data_only_on_pickle_queues() -> None:
    pickled = spec(serializer="pickle")
    decoded = outcomes.Decoded("add", (object, 2), {"when": b"x"}, None, NOW - 60_000)
    raw = b"\x80\x05pickled bytes"
    record = outcomes.dead(pickled, picked(pickled, 0, 3, raw), decoded, "boom", "Traceback...", NOW, attempts=3)
    entry = DeadJob.model_validate_json(record.a)
    assert record.kind == "dead"
    assert entry.args == ["<class 'object'>", "2"] and entry.kwargs == {"when": "b'x'"}
    assert (entry.function, entry.attempts, entry.error, entry.traceback) == ("add", 3, "boom", "Traceback...")
    assert (entry.enqueued_at, entry.failed_at, entry.priority) == ((NOW - 60_000) / 1000, NOW / 1000, 0)
    assert base64.b64decode(entry.payload_b64 or "") == raw


def test_dead_entry_of_an_undecodable_or_missing_payload() -> None:
    s = spec()
    garbage = DeadJob.model_validate_json(outcomes.dead(s, picked(s, 1, 2, b"\xff"), None, "undecodable", None, NOW).a)
    assert (garbage.function, garbage.args, garbage.attempts) == (None, None, 2)
    assert base64.b64decode(garbage.payload_b64 or "") == b"\xff"
    missing = DeadJob.model_validate_json(outcomes.dead(s, picked(s, 1, payload=None), None, "missing", None, NOW).a)
    assert missing.payload_b64 is None


def test_put_back_restores_the_try_counter() -> None:
    s = spec(priority_levels=3)
    record = outcomes.back(picked(s, priority=2, job_try=3))
    assert (record.kind, record.a, record.token) == ("back", 2, "w.7")
    assert outcomes.back(picked(s, priority=0, job_try=1)).a == 0


def test_an_ok_record_on_the_wire_says_how_long_ago_the_job_finished() -> None:
    record = Finish("ok", "j1", b"result", token="w.7", done_at=time.monotonic() - 2.5)
    kind, job_id, token, a, _, ago, *_ = record.wire()
    # Ids go out as the bytes Redis gave (decoded with surrogateescape, so any id round-trips).
    assert (kind, job_id, token, a) == (b"ok", b"j1", b"w.7", b"result")
    assert 2_500 <= int(ago) < 60_000


@given(
    kind=st.sampled_from(["ok", "retry", "dead", "back", "cancel"]),
    job_id=st.text(),
    token=st.text(min_size=1),
    a=st.one_of(st.binary(), st.text(), st.integers(-(2**63), 2**63 - 1)),
    b=st.one_of(st.binary(), st.text()),
    job_try=st.integers(0, 10**6),
    ran_ms=st.integers(-1, 10**9),
    note=st.text(),
)
def test_a_packed_record_is_what_redis_py_would_send(
    kind: FinishKind,
    job_id: str,
    token: str,
    a: bytes | str | int,
    b: bytes | str,
    job_try: int,
    ran_ms: int,
    **more: str,
) -> None:
    note = more["note"]
    # The worker writes its round trip as bytes it framed itself (QueueOps.finish_and_pickup); the cluster
    # client goes through redis-py. Both must send the same arguments.
    record = Finish(kind, job_id, a, b, token, 0.0, job_try, ran_ms, note)
    try:
        fields = record.wire()
    except UnicodeEncodeError:  # a lone surrogate in a text field: refused before it is queued (Worker._storable)
        return
    assert record.packed() == b"".join(Connection().pack_command(*fields))[len(b"*9\r\n") :]


def test_error_text() -> None:
    assert outcomes.error_text(None) == "none recorded"
    recorded = json.dumps({"error": "timed out after 3s", "attempt": 2}).encode()
    assert outcomes.error_text(recorded) == "timed out after 3s"
    assert outcomes.error_text(b"plain words") == "plain words"


def test_parse_pickup_reply() -> None:
    # Per job: id, payload, score; a job that is not a first try or has flags (1 aborted, 2 has a try counter) carries
    # {payload, try, last error, flags} in the payload's place.
    reply = [
        *(0, 250, 2),
        *(b"a", b"payload", b"-9999999999999.0"),
        *(b"b", [b"p", 1, None, 2], b"5"),
        *(b"c", [None, b"3", b'{"error":"x"}', 1], b"17"),
    ]
    result = parse_pickup(reply, "w.1")
    assert (result.paused, result.rate_limited, result.wait_ms, result.swept) == (False, False, 250, 2)
    # Each job's ownership record as the script wrote it: the score as Redis formatted it, the try, the token.
    assert result.jobs == [
        Picked("a", b"payload", 1, -9_999_999_999_999, None, "w.1", record=b"-9999999999999.0 1 w.1", counted=False),
        Picked("b", b"p", 1, 5, None, "w.1", record=b"5 1 w.1", counted=True),
        Picked("c", None, 3, 17, b'{"error":"x"}', "w.1", aborted=True, record=b"17 3 w.1", counted=False),
    ]
    assert parse_pickup([1, -1, 0], "t").paused and parse_pickup([2, 400, 0], "t").rate_limited
    assert parse_pickup([3, -1, 0], "t").resent


def test_dead_record_carries_arqs_failed_result() -> None:
    s = spec(retention={"failed_seconds": 60})
    decoded = outcomes.Decoded("add", (1, 2), {"k": "v"}, None, NOW - 60_000)
    record = outcomes.dead(
        s, picked(s, 1, 3), decoded, "ValueError: x", None, NOW, exc=ValueError("x"), start_ms=NOW - 7
    )
    result = json.loads(record.b)
    assert result == {
        "t": 3, "f": "add", "a": [1, 2], "k": {"k": "v"}, "et": NOW - 60_000, "s": False,
        "r": "ValueError: x", "st": NOW - 7, "ft": NOW, "q": s.queue_key, "id": "j1",
    }  # fmt: skip
    # Undecodable payloads: arq's placeholders; no result at all when failed results are not kept.
    bare = json.loads(outcomes.dead(s, picked(s, 1, payload=b"\xff"), None, "undecodable", None, NOW).b)
    assert (bare["f"], bare["a"], bare["k"], bare["et"], bare["st"]) == ("<unknown>", [], {}, 0, NOW)
    assert outcomes.dead(spec(retention={"failed_seconds": 0}), picked(s, 1), decoded, "e", None, NOW).b == b""


def test_pickled_payload_dead_on_a_json_queue_gets_a_result_its_pickling_producer_reads() -> None:
    s = spec(retention={"failed_seconds": 60})
    arq_payload = pickle.dumps({"t": None, "f": "add", "a": (1,), "k": {}, "et": NOW})  # arq's default producer
    raw = outcomes.dead(s, picked(s, 1, payload=arq_payload), None, "undecodable payload (json): x", None, NOW).b
    assert looks_pickled(raw)
    result = pickle.loads(raw)  # our own bytes: a dict of plain data and arq's exception
    assert type(result["r"]) is JobExecutionFailed and result["r"].args == ("undecodable payload (json): x",)
    assert (result["s"], result["id"], result["f"]) == (False, "j1", "<unknown>")
    # Bytes that are neither JSON nor a pickle: nobody's format to answer in, so the queue's own.
    other = outcomes.dead(s, picked(s, 1, payload=b"\xff"), None, "undecodable", None, NOW).b
    assert json.loads(other)["r"] == "undecodable"


def test_pickle_queue_failed_result_holds_an_exception_arqs_client_can_rebuild() -> None:
    s = spec(serializer="pickle")
    decoded = outcomes.Decoded("add", (object(),), {}, None, NOW)

    class Local(Exception):  # not importable by name: cannot be pickled
        pass

    for exc, expected in (
        (KeyError("k"), KeyError("k")),
        (Local("l"), JobExecutionFailed("Local: l")),
        (None, JobExecutionFailed("Local: l")),
    ):
        raw = outcomes.dead(s, picked(s, 1), decoded, "Local: l", None, NOW, exc=exc).b
        result = pickle.loads(raw)  # our own bytes
        assert type(result["r"]) is type(expected) and result["r"].args == expected.args
        assert result["s"] is False and len(result["a"]) == 1


QUEUES_FOR_TRIPS = parse_queues(
    {
        "queues": {
            "plain": {"functions": ["t.m.f"]},
            "limited": {
                "functions": ["t.m.f"],
                "priority_levels": 5,
                "rate_limit": {"max_jobs": 5, "interval": 2},
                "group": {"key": "tenant", "concurrency": 2},
                "retention": {"completed_seconds": 0, "completed_max": 7},
            },
        }
    }
)


@given(
    queue=st.sampled_from(sorted(QUEUES_FOR_TRIPS)),
    ids=st.lists(st.text(alphabet=st.characters(codec="utf-8"), min_size=1), max_size=5),
    wanted=st.integers(0, 2000),
    fresh=st.booleans(),
    lane=st.integers(0, LANES - 1),
    functions=st.booleans(),
)
def test_a_framed_round_trip_is_the_pipeline_s_bytes(
    queue: str, ids: list[str], wanted: int, fresh: bool, lane: int, functions: bool
) -> None:
    # QueueOps frames its finish-and-pickup round trip itself, from parts packed once; redis-py's pipeline (the
    # cluster client's path) must get the same commands from the same records, by EVALSHA or by FCALL.
    ops = QueueOps(Redis(), QUEUES_FOR_TRIPS[queue], "w-1")
    if functions:
        ops._by_fcall = True
        ops._frame_heads()
    finish, pickup = (
        (["FCALL", WORKER_LIBRARY.function("finish")], ["FCALL", WORKER_LIBRARY.function("pickup")])
        if functions
        else (["EVALSHA", ops._finish.sha], ["EVALSHA", ops._pickup.sha])
    )
    records = [Finish("ok", job_id, b"{}", token="w-1.3", job_try=1, ran_ms=2) for job_id in ids]
    commands = [[*finish, 8, *ops._finish_keys(), *ops._finish_args(records)]]
    if wanted > 0:
        keys = ops._pickup_keys(lane)
        commands.append([*pickup, len(keys), *keys, *ops._pickup_args(wanted, "w-1.9", fresh)])
    expected = b"".join(Connection().pack_commands(commands))
    assert ops._framed_trip(records, wanted, "w-1.9", fresh, lane) == expected
