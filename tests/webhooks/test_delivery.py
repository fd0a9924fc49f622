"""The deliverer in-process against a real redis-server and a real receiver on loopback that verifies every
request with the Standard Webhooks reference library."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import generate_latest
from redis.asyncio import Redis

from arqscale.core import event_stream
from arqscale.core.events import events_key
from arqscale.core.keys import callback_key
from arqscale.core.models import JobRequest
from arqscale.core.producer import CallbackError, Producer
from arqscale.core.webhook_store import GROUP, WebhookStore
from event_support import Job, emit_jobs
from webhook_support import (
    SECRET_ENV,
    Receiver,
    delivering,
    emit,
    hooks_queue,
    receiving,
    specs_of,
    until,
)


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)


async def test_events_are_delivered_signed_with_a_stable_id(redis: Redis) -> None:
    receiver = Receiver()
    specs = specs_of(hooks_queue(receiver))
    async with receiving(receiver), delivering(redis, specs):
        ids = [await emit(redis, f"job-{i}", duration_ms=5, worker="w-1") for i in range(20)]
        await emit(redis, "job-x", event="active")  # not an event the endpoint wants
        await until(lambda: len(receiver.received) == 20, "20 deliveries")
    assert not receiver.rejected
    assert receiver.ids("main") == {f"q:{i}:main" for i in ids}
    first = receiver.by_id()[f"q:{ids[0]}:main"][0].body
    assert first["type"] == "job.completed"
    assert first["timestamp"].endswith("Z")
    assert first["data"] == {
        "queue": "q",
        "job_id": "job-0",
        "event": "completed",
        "event_id": ids[0],
        "at": first["data"]["at"],
        "try": 1,
        "duration_ms": 5,
        "worker": "w-1",
    }
    # Every entry was acknowledged, and nothing is left to send.
    pending = await redis.xpending(events_key("q"), GROUP)
    assert pending["pending"] == 0
    assert await WebhookStore(redis, specs["q"]).pending_count() == 0


async def test_a_batched_entry_is_delivered_once_per_job_and_acknowledged_whole(redis: Redis) -> None:
    """A finish call's `completed` events share entries (docs/events.md, "Batched entries"): each job gets its
    own delivery under its own event id, and the entries leave the group's pending list."""
    receiver = Receiver()
    specs = specs_of(hooks_queue(receiver))
    batch: list[Job] = [(f"b-{i}".encode(), 1 + i % 2, 3 * i) for i in range(45)]
    async with receiving(receiver), delivering(redis, specs):
        await emit_jobs(redis, "q", "completed", batch)
        await until(lambda: len(receiver.received) == 45, "45 deliveries")
    assert not receiver.rejected
    events = await event_stream.history(redis, "q")
    assert receiver.ids("main") == {f"q:{e.id}:main" for e in events} and len(events) == 45
    body = receiver.by_id()[f"q:{events[7].id}:main"][0].body
    assert (body["data"]["job_id"], body["data"]["try"], body["data"]["duration_ms"]) == ("b-7", 2, 21)
    assert (await redis.xpending(events_key("q"), GROUP))["pending"] == 0


async def test_a_receiver_that_fails_n_times_gets_it_on_attempt_n_plus_one(redis: Redis) -> None:
    receiver = Receiver(fail_first={"main": 2})
    specs = specs_of(hooks_queue(receiver))
    async with receiving(receiver), delivering(redis, specs) as deliverer:
        ids = [await emit(redis, f"j{i}") for i in range(5)]
        await until(lambda: len(receiver.received) == 5, "5 deliveries")
    page = generate_latest(deliverer.metrics.registry).decode()  # stopped: every attempt is settled
    assert all(receiver.tries[f"q:{i}:main"] == 3 for i in ids)
    assert 'arqscale_webhooks_deliveries_total{endpoint="main",outcome="retried",queue="q"} 10.0' in page
    assert 'arqscale_webhooks_deliveries_total{endpoint="main",outcome="delivered",queue="q"} 5.0' in page


async def test_exhausted_attempts_go_to_the_dead_store_and_can_be_retried(redis: Redis) -> None:
    receiver = Receiver(status=503)
    specs = specs_of(hooks_queue(receiver))
    store = WebhookStore(redis, specs["q"])
    async with receiving(receiver), delivering(redis, specs):
        ids = [await emit(redis, f"d{i}") for i in range(3)]

        async def dead() -> bool:
            return (await store.dead_page()).total == 3

        await until(dead, "3 dead deliveries")
        page = await store.dead_page()
        assert {item.id for item in page.items} == {f"q:{i}:main" for i in ids}
        assert all(item.attempts == 4 and item.last_error == "HTTP 503 from 127.0.0.1" for item in page.items)
        assert receiver.tries[f"q:{ids[0]}:main"] == 4
        # The receiver is fixed: retrying sends them again, same ids, same bodies.
        receiver.status = 200
        retried = await store.retry_dead([f"q:{ids[0]}:main", "q:0-0:main"])
        assert retried.retried == [f"q:{ids[0]}:main"] and retried.missing == ["q:0-0:main"]
        await until(lambda: receiver.ids() == {f"q:{ids[0]}:main"}, "the retried delivery")
        assert (await store.retry_dead()).retried  # all the rest
        await until(lambda: len(receiver.ids()) == 3, "all retried deliveries")
    assert (await store.dead_page()).total == 0


async def test_purge_and_retention_of_the_dead_store(redis: Redis) -> None:
    receiver = Receiver(status=410)
    specs = specs_of(hooks_queue(receiver, retention={"failed_max": 2}, webhooks={"retry": {"max_attempts": 1}}))
    store = WebhookStore(redis, specs["q"])
    async with receiving(receiver), delivering(redis, specs):
        for i in range(4):
            await emit(redis, f"p{i}")

        async def four_tries() -> bool:
            return sum(receiver.tries.values()) == 4 and await store.pending_count() == 0

        await until(four_tries, "4 attempts")
    page = await store.dead_page()
    assert page.total == 2  # retention.failed_max trims the oldest
    assert (await store.purge_dead([page.items[0].id])).deleted == 1
    assert (await store.purge_dead()).deleted == 1
    assert (await store.dead_page()).total == 0


async def test_per_job_callback_urls(redis: Redis) -> None:
    receiver = Receiver()
    queues = hooks_queue(receiver)
    specs = specs_of(queues)
    producer = Producer(redis, specs)
    await producer.enqueue("q", "say", "x", job_id="with-cb", callback_url=receiver.url("cb-1"))
    await producer.enqueue("q", "say", "x", job_id="without-cb")
    assert await redis.pttl(callback_key("with-cb")) > 0
    async with receiving(receiver), delivering(redis, specs):
        a = await emit(redis, "with-cb")
        b = await emit(redis, "without-cb")
        await emit(redis, "with-cb", event="active")  # callbacks get the final events only, by default
        await until(lambda: len(receiver.received) == 3, "3 deliveries")
    assert receiver.ids("cb-1") == {f"q:{a}:callback"}
    assert receiver.ids("main") == {f"q:{a}:main", f"q:{b}:main"}
    # A queue without callbacks refuses a callback URL; a URL that is no http(s) URL is refused by the model.
    no_callbacks = specs_of(hooks_queue(receiver, webhooks={"callbacks": None}))
    with pytest.raises(CallbackError):
        await Producer(redis, no_callbacks).enqueue("q", "say", callback_url="https://example.com/hook")
    for bad in ("ftp://example.com/", "https://user:pw@example.com/", "http:///nohost", "https://a b/"):
        with pytest.raises(ValueError):
            JobRequest(function="say", callback_url=bad)


async def test_refused_addresses_go_to_the_dead_store_at_once(redis: Redis) -> None:
    receiver = Receiver()
    specs = specs_of(hooks_queue(receiver))
    store = WebhookStore(redis, specs["q"])
    async with receiving(receiver), delivering(redis, specs, allowed=()):  # loopback not allowed
        await emit(redis, "r1")

        async def dead() -> bool:
            return (await store.dead_page()).total == 1

        await until(dead, "the refused delivery in the dead store")
    [item] = (await store.dead_page()).items
    assert item.attempts == 1 and "loopback" in (item.last_error or "")
    assert not receiver.tries


async def test_a_deliverer_reads_what_it_had_read_but_not_stored(redis: Redis) -> None:
    """Entries read into the group by a consumer that then died are read again by that consumer at start, and
    claimed by any other once idle."""
    receiver = Receiver()
    specs = specs_of(hooks_queue(receiver))
    await redis.xgroup_create(events_key("q"), GROUP, id="$", mkstream=True)
    ids = [await emit(redis, f"c{i}") for i in range(6)]
    # Two consumers read three entries each and "die" before storing anything.
    await redis.xreadgroup(GROUP, "test", {events_key("q"): ">"}, count=3)
    await redis.xreadgroup(GROUP, "gone", {events_key("q"): ">"}, count=3)
    async with receiving(receiver), delivering(redis, specs, consumer="test"):
        await until(lambda: len(receiver.ids()) == 6, "all 6 deliveries")
    assert receiver.ids() == {f"q:{i}:main" for i in ids}
    assert (await redis.xpending(events_key("q"), GROUP))["pending"] == 0


async def test_events_trimmed_before_they_were_read_are_reported(redis: Redis, caplog: Any) -> None:
    receiver = Receiver()
    specs = specs_of(hooks_queue(receiver))
    async with receiving(receiver), delivering(redis, specs):
        await emit(redis, "before")
        await until(lambda: len(receiver.received) == 1, "the first delivery")
    # The deliverer is down while the stream (capped at 5 here) moves on by 20 entries.
    for i in range(20):
        await redis.xadd(events_key("q"), {"event": "completed", "job": f"g{i}", "at": 1}, maxlen=5, approximate=False)
    async with receiving(receiver), delivering(redis, specs) as deliverer:
        await until(lambda: len(receiver.received) == 6, "the 5 entries still in the stream")
    page = generate_latest(deliverer.metrics.registry).decode()
    assert 'arqscale_webhooks_stream_gaps_total{queue="q"} 1.0' in page
    assert 'arqscale_webhooks_events_lost_total{queue="q"} 15.0' in page
    assert "15 event(s) after" in caplog.text
    assert "were trimmed from arqscale:q:events before the webhook deliverers read them" in caplog.text


async def test_delivery_body_bytes_are_the_same_on_every_attempt(redis: Redis) -> None:
    receiver = Receiver(fail_first={"main": 1})
    specs = specs_of(hooks_queue(receiver))
    async with receiving(receiver), delivering(redis, specs):
        await emit(redis, "same", error="x" * 10, reason="because")
        await until(lambda: len(receiver.received) == 1, "the delivery")
    [got] = receiver.received
    assert got.body["data"]["error"] == "x" * 10
    assert json.dumps(got.body)  # parsed by the library: valid JSON
    await asyncio.sleep(0)
