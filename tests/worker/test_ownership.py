"""The worker protocol's ownership rules, script by script, against a real redis-server (docs/design.md,
"Ownership"): one owner per running job, every resend safe, a lost pickup reply costs no try, pickup cost
independent of the running jobs, Redis' clock, stranded priority bands.

Two ``QueueOps`` with different worker ids stand in for two worker processes: what matters here is the
order of the scripts' calls, which a test can set exactly (the process-level versions, with a loop that
really blocks and a clock that really runs ahead, are in test_stalled_workers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from arq.connections import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from arqscale.core import queue_control, scores
from arqscale.core.counts import CountsReader
from arqscale.core.dead_letters import DeadLetters, RequeueOutcome
from arqscale.core.job_status import JobStatusReader
from arqscale.core.keys import QueueKeys, group_key, in_progress_key, logs_key, progress_key, result_key, retry_key
from arqscale.core.lua import RETRY_TTL_MS
from arqscale.core.models import JobState
from arqscale.core.producer import Producer
from arqscale.core.serializers import json_dumps, json_loads
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.worker import outcomes
from arqscale.worker.pickup import Finish, Picked, QueueOps

LEASE = 0.3  # seconds: short, so a test can let a lease run out


def make_spec(**settings: Any) -> QueueSpec:
    body = {"functions": ["worker_tasks.add", "worker_tasks.record"], "lease_seconds": LEASE, **settings}
    return parse_queues({"queues": {"q": body}})["q"]


SPEC = make_spec()
K = QueueKeys.for_queue("q", SPEC.queue_key)


def ops(redis: Redis, worker: str, spec: QueueSpec = SPEC) -> QueueOps:
    return QueueOps(redis, spec, worker)


async def enqueue(redis: Redis, *job_ids: str, spec: QueueSpec = SPEC) -> None:
    producer = Producer(redis, {"q": spec})
    for job_id in job_ids:
        assert (await producer.enqueue("q", "add", 1, 2, job_id=job_id)).created


async def take(o: QueueOps, token: str, wanted: int = 1) -> list[Picked]:
    return (await o.pickup(wanted, token)).jobs


async def expire_leases() -> None:
    await asyncio.sleep(LEASE + 0.15)


def ok(job: Picked, result: bytes | None = None) -> Finish:
    """A success record; by default with the result arq writes (``Job.result()`` and our status read it)."""
    if result is None:
        fields = {"t": job.job_try, "f": "add", "a": [1, 2], "k": {}, "et": 0, "s": True, "r": 3, "st": 0, "ft": 0}
        result = json.dumps({**fields, "q": SPEC.queue_key, "id": job.job_id}).encode()
    return Finish("ok", job.job_id, result, token=job.token)


async def lease(redis: Redis, job_id: str, spec: QueueSpec = SPEC) -> float | None:
    """The job's lease expiry (Redis ms): a running job is parked in its queue under it (``scores.LEASED``)."""
    score = await redis.zscore(spec.queue_key, job_id)
    return None if score is None else scores.lease_of(score)


async def state(redis: Redis, job_id: str) -> JobState:
    return (await JobStatusReader(redis, {"q": SPEC}).read(job_id)).state


# ----------------------------------------------------------------------------- one owner


async def test_a_stalled_owner_writes_nothing_once_its_lease_passed_on(redis: Redis) -> None:
    a, b = ops(redis, "wa"), ops(redis, "wb")
    await enqueue(redis, "j")
    [mine] = await take(a, "wa.1")
    await expire_leases()  # worker A stalls past its lease
    [theirs] = await take(b, "wb.1")  # B's pickup sweeps the job back and takes it
    assert theirs.job_id == "j" and theirs.job_try == 2 and theirs.score == mine.score  # same place in line
    lease_b = await lease(redis, "j")
    assert lease_b is not None

    # Everything A would write now is refused, whatever its kind.
    stale_retry, _ = outcomes.retry(SPEC, mine, 1, "boom", None, 0)
    assert await a.finish([stale_retry]) == ["j"]
    assert await a.finish([outcomes.back(mine)]) == ["j"]
    assert await a.finish([outcomes.dead(SPEC, mine, None, "boom", None, 0)]) == ["j"]
    assert (await a.heartbeat([("j", mine.token)], 10_000)).lost == ["j"]
    # B's lease, ownership and try counter are untouched; the job is not queued twice or dead-lettered.
    assert await lease(redis, "j") == lease_b  # parked once, under B's lease: B runs it
    # B runs try 2 (its record says so); the counter holds the one try before it, A's, counted by the sweep.
    assert (await redis.get(in_progress_key("j"))).endswith(b" 2 wb.1")
    assert await redis.get(retry_key("j")) == b"1"
    assert await redis.hlen(K.dlq) == 0
    # B finishes; then A's success arrives: dropped, B's result stays.
    assert await b.finish([ok(theirs, b"from b")]) == []
    assert await a.finish([ok(mine, b"from a")]) == ["j"]
    assert await redis.get(result_key("j")) == b"from b"
    # A's heartbeat cannot re-create the lease of a job that finished elsewhere.
    assert (await a.heartbeat([("j", mine.token)], 10_000)).lost == ["j"]
    assert await redis.zscore(SPEC.queue_key, "j") is None and await redis.exists(in_progress_key("j")) == 0


async def test_the_owner_keeps_its_lease_and_its_outcome_counts(redis: Redis) -> None:
    a = ops(redis, "wa")
    await enqueue(redis, "j")
    [job] = await take(a, "wa.1")
    for _ in range(3):
        await asyncio.sleep(LEASE / 2)
        assert (await a.heartbeat([("j", job.token)], 10_000)).lost == []
    assert await take(ops(redis, "wb"), "wb.1") == []  # never swept: the heartbeat kept it alive
    assert await a.finish([ok(job)]) == []
    assert await state(redis, "j") is JobState.COMPLETED


# A job's own score as any producer may have written it in the normal band: negative (before 1970), the epoch, any
# past ms, and fractions (a score written by hand): Redis formats it in its reply as it likes, and the ownership
# record keeps that text.
PLACES = (
    st.integers(-scores.BAND // 2 + 1, 1_700_000_000_000).filter(lambda s: s != 1)  # 1 is arq's abort mark
    | st.floats(-1e12, 1.7e12, allow_nan=False).filter(lambda s: s != 1)
    | st.sampled_from([-1, 0, 2, 1_700_000_000_000])
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    place=PLACES,
    before=st.integers(0, 4),
    kind=st.sampled_from(["ok", "retry", "back", "dead", "cancel"]),
    by_token=st.booleans(),
)
async def test_an_outcome_holds_its_job_by_the_ownership_record_it_was_taken_under(
    redis: Redis, place: float, before: int, kind: str, by_token: bool
) -> None:
    """The pickup hands each job the record it wrote; an outcome that sends it back is honoured (one string
    comparison), once: the same outcome again is stale. One that sends the token alone is honoured the same way."""
    await redis.flushall()
    spec = make_spec(max_tries=10)
    await enqueue(redis, "j", spec=spec)
    await redis.zadd(spec.queue_key, {"j": place})
    await redis.set(retry_key("j"), before)
    a = ops(redis, "wa", spec)
    [job] = await take(a, "wa.1")
    assert job.record == await redis.get(in_progress_key("j")) and job.job_try == before + 1
    assert await redis.pttl(in_progress_key("j")) == -1  # no TTL: never evicted under a volatile-* maxmemory policy
    record = {
        "ok": lambda: ok(job),
        "retry": lambda: outcomes.retry(spec, job, 1, "boom", None, 0)[0],
        "back": lambda: outcomes.back(job),
        "dead": lambda: outcomes.dead(spec, job, None, "boom", None, 0),
        "cancel": lambda: outcomes.cancelled(spec, job, "cancelled on request", 0),
    }[kind]().queued(job, time.monotonic())
    if by_token:
        record = dataclasses.replace(record, held=b"")
    assert await a.finish([record]) == []
    assert await redis.exists(in_progress_key("j")) == 0
    assert await a.finish([record]) == ["j"]
    if kind in ("retry", "back"):  # back in the queue under its own place in line (a retry: later, same band)
        own = await redis.zscore(spec.queue_key, "j")
        assert own is not None and scores.split_score(own, spec)[0] == scores.split_score(place, spec)[0]
        if kind == "back":
            assert own == place


# ----------------------------------------------------------------------------- resends


async def test_every_outcome_resent_after_it_was_written_changes_nothing(redis: Redis) -> None:
    spec = make_spec(retention={"completed_seconds": 0})  # no result kept: the id is free again at once
    a = ops(redis, "wa", spec)
    await enqueue(redis, "ok", "retry", "back", "dead", spec=spec)
    jobs = {j.job_id: j for j in await take(a, "wa.1", 4)}
    retry, _ = outcomes.retry(spec, jobs["retry"], 1, "boom", None, 0, defer_ms=0)
    dead = outcomes.dead(spec, jobs["dead"], None, "boom", None, 0)
    batch = [ok(jobs["ok"], b""), retry, outcomes.back(jobs["back"]), dead]
    assert await a.finish(batch) == []

    # What others did meanwhile: the same id enqueued again; the retried and put-back jobs taken by B;
    # the dead job requeued.
    await enqueue(redis, "ok", spec=spec)
    b = ops(redis, "wb", spec)
    taken = {j.job_id: j for j in await take(b, "wb.1", 3)}
    assert set(taken) == {"ok", "retry", "back"}
    assert await DeadLetters(redis, spec).requeue("dead") is RequeueOutcome.REQUEUED
    before = {key: await redis.dump(key) for key in await redis.keys("*") if not key.startswith(b"arqscale:q:pick")}

    assert sorted(await a.finish(batch)) == ["back", "dead", "ok", "retry"]  # the resend: every record dropped
    after = {key: await redis.dump(key) for key in await redis.keys("*") if not key.startswith(b"arqscale:q:pick")}
    assert after == before


async def test_a_resent_pickup_returns_what_it_took_without_counting_a_try(redis: Redis) -> None:
    spec = make_spec(max_tries=1, rate_limit={"max_jobs": 3, "interval": 60})
    a = ops(redis, "wa", spec)
    await enqueue(redis, "j1", "j2", spec=spec)
    first = await a.pickup(5, "wa.1")  # its reply is "lost": the worker sends the same call again
    again = await a.pickup(5, "wa.1")
    assert again.resent and [j.job_id for j in again.jobs] == [j.job_id for j in first.jobs] == ["j1", "j2"]
    assert [j.job_try for j in again.jobs] == [1, 1]
    assert [j.payload for j in again.jobs] == [j.payload for j in first.jobs]
    assert await redis.zcard(K.starts) == 2  # the rate window charged once
    # The next call (a new token) takes what is left of the window, and the jobs run on their first try.
    await enqueue(redis, "j3", "j4", spec=spec)
    nxt = await a.pickup(5, "wa.2")
    assert [j.job_id for j in nxt.jobs] == ["j3"] and nxt.rate_limited
    assert await a.finish([ok(j) for j in again.jobs]) == []
    assert await state(redis, "j1") is JobState.COMPLETED


# Ids and worker ids with spaces, digits, leading blanks, multi-byte characters: the pick record is one string of
# length-prefixed items, read back by a resend.
PICK_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=24)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(ids=st.lists(PICK_TEXT, min_size=1, max_size=6, unique=True), worker=PICK_TEXT)
async def test_a_resent_pickup_reads_back_any_ids_under_any_token(redis: Redis, ids: list[str], worker: str) -> None:
    await redis.flushall()
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)  # a plain arq producer takes any id
    for job_id in ids:
        assert await arq.enqueue_job("add", 1, 2, _job_id=job_id, _queue_name=SPEC.queue_key) is not None
    a = ops(redis, worker)
    first = await a.pickup(len(ids), f"{worker}.1")
    again = await a.pickup(len(ids), f"{worker}.1")
    assert again.resent and [j.job_id for j in again.jobs] == [j.job_id for j in first.jobs]
    assert sorted(j.job_id for j in first.jobs) == sorted(ids)
    assert [j.record for j in again.jobs] == [j.record for j in first.jobs]
    assert await a.finish([ok(j) for j in again.jobs]) == []


async def test_a_resent_pickup_does_not_return_jobs_it_no_longer_holds(redis: Redis) -> None:
    a = ops(redis, "wa")
    await enqueue(redis, "j")
    await a.pickup(1, "wa.1")
    await expire_leases()  # the reply never came, and the lease ran out
    [theirs] = await take(ops(redis, "wb"), "wb.1")
    again = await a.pickup(1, "wa.1")
    assert again.jobs == [] and theirs.job_try == 2


async def test_each_lane_resends_its_own_pickup_while_the_other_is_out(redis: Redis) -> None:
    # A worker keeps two round trips in flight (pickup.LANES): both replies may be lost, and each resend must
    # still return what its own call took, not what the other lane took after it.
    a = ops(redis, "wa")
    await enqueue(redis, "j1", "j2", "j3", "j4")
    first = await a.pickup(2, "wa.1", lane=0)
    second = await a.pickup(2, "wa.2", lane=1)
    assert [j.job_id for j in first.jobs] == ["j1", "j2"] and [j.job_id for j in second.jobs] == ["j3", "j4"]
    again_first = await a.pickup(2, "wa.1", lane=0)
    again_second = await a.pickup(2, "wa.2", lane=1)
    assert again_first.resent and [j.job_id for j in again_first.jobs] == ["j1", "j2"]
    assert again_second.resent and [j.job_id for j in again_second.jobs] == ["j3", "j4"]
    assert [j.job_try for j in again_first.jobs + again_second.jobs] == [1, 1, 1, 1]
    assert await a.finish([ok(j) for j in again_first.jobs + again_second.jobs]) == []
    assert {await state(redis, f"j{i}") for i in range(1, 5)} == {JobState.COMPLETED}


# ----------------------------------------------------------------------------- pickup cost


async def _pickup_commands(redis: Redis, o: QueueOps, token: str) -> dict[str, int]:
    """Commands one pickup ran inside Redis (scripts' calls count in INFO commandstats)."""
    await redis.config_resetstat()
    assert len((await o.pickup(1, token)).jobs) == 1
    stats = await redis.info("commandstats")
    # The script call itself (FCALL, or EVALSHA where Redis has no Functions) and the library's first load are not
    # commands the pickup runs inside Redis.
    calls = ("cmdstat_evalsha", "cmdstat_fcall", "cmdstat_function|load")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if name not in calls}


async def test_pickup_cost_does_not_grow_with_running_jobs(redis: Redis) -> None:
    spec = make_spec(lease_seconds=600, priority_levels=3)
    producer = Producer(redis, {"q": spec})
    await producer.enqueue_many("q", [_request(i) for i in range(10_500)])
    o = ops(redis, "wa", spec)
    idle = await _pickup_commands(redis, o, "wa.idle")
    for n in range(10):  # 10,000 running: 100 pods at concurrency 100
        assert len((await o.pickup(1000, f"wa.{n}")).jobs) == 1000
    running = await redis.zcount(SPEC.queue_key, scores.LEASED, "+inf")
    assert running == 10_001 and await redis.exists(K.active) == 0
    busy = await _pickup_commands(redis, o, "wa.busy")
    assert busy == idle, (idle, busy)
    assert busy["zrangebyscore"] <= 3  # the sweep's look at expired leases, the band with a job in it


def _request(i: int) -> Any:
    from arqscale.core.models import JobRequest

    return JobRequest(function="add", args=[i, i], job_id=f"j{i:05d}")


async def test_one_call_takes_at_most_a_thousand_jobs(redis: Redis) -> None:
    spec = make_spec(lease_seconds=600)
    await Producer(redis, {"q": spec}).enqueue_many("q", [_request(i) for i in range(1500)])
    assert len((await ops(redis, "wa", spec).pickup(5000, "wa.1")).jobs) == 1000


# ----------------------------------------------------------------------------- Redis keeps the time


async def test_readiness_leases_and_counts_follow_redis_clock_not_the_callers(redis: Redis) -> None:
    # A producer whose clock is a minute ahead (plain arq, which writes its own score) and our producer.
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)
    ahead = int((datetime.now(UTC).timestamp() + 60) * 1000)
    await arq.enqueue_job("add", 1, 2, _job_id="ahead", _queue_name=SPEC.queue_key, _defer_until=None)
    await redis.zadd(SPEC.queue_key, {"ahead": ahead})  # as its own clock would have scored it
    await enqueue(redis, "ours")
    counts = (await CountsReader(redis).read({"q": SPEC}))["q"]
    assert (counts.waiting, counts.delayed) == (1, 1)  # plain arq's ready time stays its own
    [job] = await take(ops(redis, "wa"), "wa.1", 5)
    assert job.job_id == "ours"
    redis_now = await _redis_ms(redis)
    expiry = await lease(redis, "ours")
    assert expiry is not None and redis_now < expiry <= redis_now + LEASE * 1000 + 50


async def _redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return round(seconds * 1000 + micros / 1000)


async def test_a_ready_time_before_1970_is_ready_now(redis: Redis) -> None:
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)
    await arq.enqueue_job(
        "add",
        1,
        2,
        _job_id="old",
        _queue_name=SPEC.queue_key,
        _defer_until=datetime(1960, 1, 1, tzinfo=UTC),
        _expires=3600,  # arq derives the payload's TTL from the ready time otherwise, and a negative TTL fails
    )
    assert (await redis.zscore(SPEC.queue_key, "old")) < 0
    counts = (await CountsReader(redis).read({"q": SPEC}))["q"]
    assert (counts.waiting, counts.delayed) == (1, 0)
    assert await state(redis, "old") is JobState.QUEUED
    assert [j.job_id for j in await take(ops(redis, "wa"), "wa.1")] == ["old"]


# Every ready time a plain arq producer can write into the normal band: before 1970 (negative scores, down to
# the band's lower edge), the epoch, any past time; and future ones, as milliseconds ahead of now.
PAST = st.integers(-scores.BAND // 2, 1_700_000_000_000) | st.sampled_from([-scores.BAND // 2, -1, 0, 1])
AHEAD = st.integers(60_000, 10 * 365 * 86_400_000)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(ready=st.lists(st.tuples(st.booleans(), PAST, AHEAD), min_size=1, max_size=5))
async def test_any_ready_time_agrees_across_counts_status_and_pickup(
    redis: Redis, ready: list[tuple[bool, int, int]]
) -> None:
    """Issue 10, point 4: whatever the ready time, the counts, the job's state and a pickup agree."""
    await redis.flushall()
    now = scores.now_ms()
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)
    due = set()
    for n, (is_past, past, ahead) in enumerate(ready):
        job_id = f"j{n}"
        await arq.enqueue_job("add", 1, 2, _job_id=job_id, _queue_name=SPEC.queue_key, _expires=3600)
        # The score as plain arq writes it for that ready time (normal band: the ready time itself).
        await redis.zadd(SPEC.queue_key, {job_id: past if is_past else now + ahead})
        if is_past:
            due.add(job_id)
    counts = (await CountsReader(redis).read({"q": SPEC}))["q"]
    assert (counts.waiting, counts.delayed) == (len(due), len(ready) - len(due))
    for n in range(len(ready)):
        expected = JobState.QUEUED if f"j{n}" in due else JobState.DEFERRED
        assert await state(redis, f"j{n}") is expected
    assert {j.job_id for j in await take(ops(redis, "wa"), "wa.1", wanted=len(ready))} == due


async def test_an_expired_lease_counts_as_waiting_until_swept(redis: Redis) -> None:
    await enqueue(redis, "j")
    await take(ops(redis, "wa"), "wa.1")
    assert (await CountsReader(redis).read({"q": SPEC}))["q"].active == 1
    await expire_leases()
    counts = (await CountsReader(redis).read({"q": SPEC}))["q"]
    assert (counts.waiting, counts.active) == (1, 0) and counts.oldest_waiting_seconds > 0
    assert await state(redis, "j") is JobState.QUEUED
    beat = await ops(redis, "wb").heartbeat([], 10_000)  # any worker's heartbeat sweeps
    assert beat.swept == 1 and await redis.zscore(SPEC.queue_key, "j") is not None


# ----------------------------------------------------------------------------- priority settings


async def test_jobs_stranded_by_new_priority_settings_are_found_and_migrated(redis: Redis) -> None:
    # Three levels with the middle one normal; then the queue is redeployed with default_priority 0, which
    # moves every band up by one: the priority-0 jobs queued before sit below the new lowest band.
    before = make_spec()
    producer = Producer(redis, {"q": before})
    await producer.enqueue("q", "add", 1, 2, job_id="urgent", priority=0)
    await producer.enqueue("q", "add", 1, 2, job_id="later", priority=0, defer_seconds=3600)
    await producer.enqueue("q", "add", 1, 2, job_id="normal")
    after = make_spec(default_priority=0)
    assert [j.job_id for j in await take(ops(redis, "wa", after), "wa.1", 5)] == ["normal"]
    assert await queue_control.stranded(redis, after) == 2
    assert await queue_control.migrate(redis, after) == 2
    assert await queue_control.stranded(redis, after) == 0
    counts = (await CountsReader(redis).read({"q": after}))["q"]
    assert (counts.waiting, counts.delayed, counts.active) == (1, 1, 1)
    priority, ready_at = scores.split_score(await redis.zscore(after.queue_key, "later"), after)
    assert priority == 0 and ready_at > await _redis_ms(redis) + 3_500_000  # keeps its ready time
    assert [j.job_id for j in await take(ops(redis, "wa", after), "wa.2")] == ["urgent"]


# ----------------------------------------------------------------------------- rate window


def test_a_rate_interval_under_a_millisecond_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        make_spec(rate_limit={"max_jobs": 5, "interval": 0.0001})


async def test_the_rate_window_slides(redis: Redis) -> None:
    # Two starts allowed in any 3 s. One start was 3.5 s ago (out of the window), one 1 s ago (in it): a
    # sliding window allows one more now; a fixed window would depend on where its boundary fell.
    spec = make_spec(rate_limit={"max_jobs": 2, "interval": 3}, lease_seconds=60)
    await Producer(redis, {"q": spec}).enqueue_many("q", [_request(i) for i in range(6)])
    now = await _redis_ms(redis)
    await redis.zadd(K.starts, {"earlier#1": now - 3_500, "earlier#2": now - 1_000})
    result = await ops(redis, "wa", spec).pickup(5, "wa.1")
    assert len(result.jobs) == 1 and result.rate_limited
    assert 1_500 <= result.wait_ms <= 2_000  # until the start of 1 s ago leaves the window
    assert await redis.zcard(K.starts) == 2  # the old start was trimmed, the new one recorded


async def test_jobs_finished_in_one_batch_keep_their_own_finish_times(redis: Redis) -> None:
    """The completed list and the dead-letter store are ordered by each job's own end, not the batch's."""
    o = ops(redis, "wa")
    await enqueue(redis, "first", "second", "dead-first", "dead-second")
    jobs = {j.job_id: j for j in await take(o, "wa.1", 4)}
    now = time.monotonic()
    batch = [
        dataclasses.replace(ok(jobs["second"]), done_at=now - 0.1),
        dataclasses.replace(ok(jobs["first"]), done_at=now - 0.4),
        dataclasses.replace(outcomes.dead(SPEC, jobs["dead-second"], None, "e", None, 0), done_at=now - 0.1),
        dataclasses.replace(outcomes.dead(SPEC, jobs["dead-first"], None, "e", None, 0), done_at=now - 0.4),
    ]
    assert await o.finish(batch) == []
    completed = dict(await redis.zrange(K.completed, 0, -1, withscores=True))
    failed = dict(await redis.zrange(K.dlq_index, 0, -1, withscores=True))
    assert 250 <= completed[b"second"] - completed[b"first"] <= 400
    assert 250 <= failed[b"dead-second"] - failed[b"dead-first"] <= 400


async def test_a_success_gives_progress_and_logs_the_results_ttl_when_its_record_says_it_may_have_some(
    redis: Redis,
) -> None:
    """The worker marks a success whose job stored progress or log lines (or whose earlier try may have); only
    those have the keys looked for. A keyed queue's stored key goes with the job; an unkeyed one has none."""
    keyed = make_spec(group={"concurrency": 2})
    o = ops(redis, "wa", keyed)
    producer = Producer(redis, {"q": keyed})
    for job_id in ("marked", "unmarked"):
        assert (await producer.enqueue("q", "add", 1, 2, job_id=job_id, group="customer-1")).created
    jobs = await take(o, "wa.1", 2)
    assert sorted(j.job_id for j in jobs) == ["marked", "unmarked"]
    for j in jobs:
        await redis.set(progress_key(j.job_id), "{}", px=RETRY_TTL_MS)
        await redis.rpush(logs_key(j.job_id), "line")
        await redis.pexpire(logs_key(j.job_id), RETRY_TTL_MS)
    records = [dataclasses.replace(ok(j), b=b"1" if j.job_id == "marked" else b"") for j in jobs]
    assert await o.finish(records) == []
    kept = keyed.retention.completed_seconds * 1000
    assert 0 < await redis.pttl(progress_key("marked")) <= kept
    assert 0 < await redis.pttl(logs_key("marked")) <= kept
    # Unmarked: left with the TTL they had (the worker said the job wrote none; nothing else writes them).
    assert await redis.pttl(progress_key("unmarked")) > kept
    assert await redis.pttl(logs_key("unmarked")) > kept
    assert await redis.exists(group_key("marked"), group_key("unmarked"), retry_key("marked")) == 0


async def test_records_from_before_the_try_moved_into_them_still_hold_their_jobs(redis: Redis) -> None:
    """A rolling upgrade: jobs taken by a worker of the earlier protocol ("<score> <token>", the try counter
    already at the running try) are finished, renewed, resent and swept by this one as before."""
    a = ops(redis, "wa")
    await enqueue(redis, "mine", "stalled", "resent")
    taken = {j.job_id: j for j in await take(a, "wa.1", 3)}
    for job_id, job in taken.items():  # as the earlier pickup left them
        await redis.set(in_progress_key(job_id), f"{job.score} wa.1")
        await redis.set(retry_key(job_id), 1)
    assert (await a.heartbeat([("mine", "wa.1"), ("stalled", "wa.1")], 10_000)).lost == []
    status = await JobStatusReader(redis, {"q": SPEC}).read("mine")
    assert status.state is JobState.ACTIVE and status.attempts == 1
    # A resend of that pickup hands the jobs back with the try from the counter.
    again = await a.pickup(3, "wa.1")
    assert again.resent and sorted((j.job_id, j.job_try) for j in again.jobs) == [
        ("mine", 1),
        ("resent", 1),
        ("stalled", 1),
    ]
    assert await a.finish([ok(taken["mine"])]) == []
    assert await state(redis, "mine") is JobState.COMPLETED
    # An expired lease is swept back and the next pickup counts the stalled try (the counter already had it).
    await expire_leases()
    jobs = {j.job_id: j for j in await take(ops(redis, "wb"), "wb.1", 3)}
    assert {i: j.job_try for i, j in jobs.items()} == {"stalled": 2, "resent": 2}
    assert (await redis.get(in_progress_key("stalled"))).endswith(b" 2 wb.1")


async def test_jobs_leased_in_the_active_set_by_workers_from_before_are_counted_listed_and_swept(
    redis: Redis,
) -> None:
    """A rolling upgrade: a worker from before the lease moved into the parked score parked its job at
    ``PARK + score`` and kept the lease in the ``active`` set. This version counts, shows and lists that job as
    running, never takes it, and once the lease runs out (its worker died) sweeps it back to its place in line."""
    from arqscale.core.job_listing import JobLister, ListState

    a = ops(redis, "wa")
    await enqueue(redis, "old", "new")
    place = await redis.zscore(SPEC.queue_key, "old")
    assert place is not None
    now = await _redis_ms(redis)
    await redis.zadd(SPEC.queue_key, {"old": scores.PARK + place})
    await redis.zadd(K.active, {"old": now + 60_000})
    await redis.set(in_progress_key("old"), f"{int(place)} 1 old-worker.1")
    [new] = await take(a, "wa.1")  # the other job, under a lease of this version
    assert new.job_id == "new"

    counts = (await CountsReader(redis).read({"q": SPEC}))["q"]
    assert (counts.active, counts.waiting) == (2, 0)
    status = await JobStatusReader(redis, {"q": SPEC}).read("old")
    assert status.state is JobState.ACTIVE and status.attempts == 1
    running = await JobLister(redis).page(SPEC, ListState.ACTIVE)
    leases = {item.job_id: item.lease_expires_at for item in running.items}
    assert running.total == 2 and set(leases) == {"old", "new"}
    assert leases["old"] == (now + 60_000) / 1000
    assert (await a.heartbeat([("new", new.token)], 10_000)).swept == 0

    # Its worker died: the lease ran out. It counts as waiting; this version's heartbeat sweeps it back.
    await redis.zadd(K.active, {"old": now - 1})
    counts = (await CountsReader(redis).read({"q": SPEC}))["q"]
    assert (counts.active, counts.waiting) == (1, 1)
    assert await state(redis, "old") is JobState.QUEUED
    waiting = await JobLister(redis).page(SPEC, ListState.WAITING)
    assert [item.job_id for item in waiting.items] == ["old"]
    assert (await a.heartbeat([("new", new.token)], 10_000)).swept == 1
    assert await redis.zscore(SPEC.queue_key, "old") == place and await redis.exists(K.active) == 0
    [again] = await take(a, "wa.2")
    assert again.job_id == "old" and again.job_try == 2  # the stalled try counts


async def test_a_lease_that_ran_out_is_listed_waiting_first_and_swept_by_the_next_pickup(redis: Redis) -> None:
    from arqscale.core.job_listing import JobLister, ListState

    a = ops(redis, "wa")
    await enqueue(redis, "a-stalled", "b-next")  # in one ms, ties go by id: these names keep enqueue order
    [job] = await take(a, "wa.1")
    assert job.job_id == "a-stalled"
    await expire_leases()
    waiting = await JobLister(redis).page(SPEC, ListState.WAITING)
    assert [item.job_id for item in waiting.items] == ["a-stalled", "b-next"] and waiting.total == 2
    assert (await JobLister(redis).page(SPEC, ListState.ACTIVE)).total == 0
    result = await a.pickup(1, "wa.2")
    assert result.swept == 1 and [j.job_id for j in result.jobs] == ["a-stalled"]
    assert result.jobs[0].job_try == 2 and result.jobs[0].score == job.score


async def test_a_running_job_that_arq_aborts_is_ended_cancelled_even_when_its_worker_is_gone(redis: Redis) -> None:
    """arq's ``Job.abort()`` takes a running job's parked score for a ready time ahead and moves the job to score 1,
    out of the lease range. Its live worker renews it back under its lease; a worker that is gone (not in the
    workers set) loses it to the next heartbeat of any worker, and the next pickup hands it out to be cancelled."""
    from arq.jobs import Job

    a, b = ops(redis, "wa"), ops(redis, "wb")
    await enqueue(redis, "alive", "gone")
    jobs = {j.job_id: j for j in await take(a, "wa.1", 2)}
    assert (await a.heartbeat([], 10_000)).swept == 0  # worker A is alive: in the workers set
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)
    for job_id in ("alive", "gone"):
        with contextlib.suppress(TimeoutError):
            await Job(job_id, arq, _queue_name=SPEC.queue_key, _deserializer=json_loads).abort(
                timeout=0.01, poll_delay=0.005
            )
        assert await redis.zscore(SPEC.queue_key, job_id) == 1  # arq's abort mark, out of the lease range
    # A renews "alive" back under its lease; a pickup meanwhile does not take a job A still holds.
    assert await take(b, "wb.1") == []
    assert (await a.heartbeat([("alive", jobs["alive"].token)], 10_000)).lost == []
    assert await lease(redis, "alive") is not None
    # A is gone (it left the workers set); B's heartbeat ends its hold on "gone".
    await a.leave()
    assert (await b.heartbeat([], 10_000)).swept == 1
    assert await redis.exists(in_progress_key("gone")) == 0 and await redis.get(retry_key("gone")) == b"1"
    [job] = await take(b, "wb.2")
    assert job.job_id == "gone" and job.aborted and job.job_try == 2
    assert (
        await b.finish([outcomes.cancelled(SPEC, job, "cancelled on request", 0).queued(job, time.monotonic())]) == []
    )
    assert await state(redis, "gone") is JobState.CANCELLED


async def test_a_finishs_completed_events_name_exactly_the_jobs_it_completed(redis: Redis) -> None:
    """The successes' `completed` events come ready-made with the records (all of them held their jobs) or are
    built by the script from the records that did (one was stale): either way one event per job completed."""
    from arqscale.core.event_stream import history

    a = ops(redis, "wa")
    ids = [f"j{i:02d}" for i in range(45)]
    await enqueue(redis, *ids)
    jobs = await take(a, "wa.1", 45)
    records = [dataclasses.replace(ok(j), ran_ms=i, job_try=j.job_try, held=j.record) for i, j in enumerate(jobs)]
    assert len(a._completed_events(records)) == 3  # 20 + 20 + 5, ready-made
    assert await a.finish(records) == []
    done = [e for e in await history(redis, "q") if e.event == "completed"]
    assert [(e.job, e.job_try, e.duration_ms, e.worker) for e in done] == [
        (j.job_id, 1, i, "wa") for i, j in enumerate(jobs)
    ]
    # Three more, one of which another worker took over meanwhile: its record is stale, the other two complete.
    await enqueue(redis, "k1", "k2", "k3")
    mine = {j.job_id: j for j in await take(a, "wa.2", 3)}
    await redis.set(in_progress_key("k2"), "0 2 wb.1")  # as if swept back and taken by worker B
    records = [dataclasses.replace(ok(j), ran_ms=7, held=j.record) for j in mine.values()]
    assert await a.finish(records) == ["k2"]
    done = [e.job for e in await history(redis, "q") if e.event == "completed"]
    assert done[45:] == ["k1", "k3"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    serializer=st.sampled_from(["json", "pickle"]),
    ours=st.booleans(),
    compact=st.booleans(),
    args=st.lists(JSON_VALUES, max_size=3),
    kwargs=st.dictionaries(st.text(min_size=1, max_size=5), JSON_VALUES, max_size=3),
)
async def test_every_job_is_announced_once_whoever_enqueued_it(
    redis: Redis, serializer: str, ours: bool, compact: bool, args: list[Any], kwargs: dict[str, Any]
) -> None:
    """Our producer announces a job at enqueue and marks its payload so (no try counter is written); the pickup
    announces a plain arq producer's job (arq's payload, in any of its encodings). Either way one `waiting` event
    and one `enqueued` in the totals per job, and a first try's success leaves no try counter behind."""
    from arqscale.core.event_stream import history, totals
    from arqscale.core.models import JobRequest

    await redis.flushall()
    spec = make_spec(serializer=serializer)
    if ours:
        await Producer(redis, {"q": spec}).enqueue_many(
            "q", [JobRequest(function="add", args=args, kwargs=kwargs, job_id="j")]
        )
    else:
        dumps = (json_dumps if compact else lambda d: json.dumps(d).encode()) if serializer == "json" else None
        arq = ArqRedis(redis.connection_pool, job_serializer=dumps)
        await arq.enqueue_job("add", *args, _job_id="j", _queue_name=spec.queue_key, **kwargs)
    a = ops(redis, "wa", spec)
    [job] = await take(a, "wa.1")
    assert not job.counted  # a first try: no try counter
    assert [e.event for e in await history(redis, "q")] == ["waiting", "active"]
    assert (await totals(redis, "q"))["enqueued"] == 1
    assert await a.finish([dataclasses.replace(ok(job), held=job.record)]) == []
    assert await redis.exists(retry_key("j"), in_progress_key("j")) == 0
