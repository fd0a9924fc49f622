"""Plain arq producers' jobs reach an idle worker through client-tracking invalidations, not the poll."""

from __future__ import annotations

from arq.connections import ArqRedis
from redis.asyncio import Redis
from test_worker import make_spec, running, wait_for

from arqscale.worker.invalidation import QueueWatch
from arqscale.worker.loop import IDLE_POLL_MAX_SECONDS, Worker


async def test_plain_arq_enqueue_is_picked_up_without_polling(redis: Redis) -> None:
    # A poll once an hour: only the invalidation of the queue key can bring these jobs in time.
    spec = make_spec(serializer="pickle", poll_interval=3600)
    arq = ArqRedis(connection_pool=redis.connection_pool)
    worker = Worker(spec, redis)
    async with running(worker):
        await wait_for(lambda: _tracking(redis), what="the worker's queue watch")
        for i in range(3):
            await arq.enqueue_job("add", i, 1, _job_id=f"plain-{i}", _queue_name=spec.queue_key)
            await wait_for(lambda i=i: redis.zscore(f"arqscale:{spec.name}:completed", f"plain-{i}"), what=f"job {i}")


async def _tracking(redis: Redis) -> bool:
    # The worker's watch is up once Redis lists a client with tracking on (flag t).
    return any("t" in c.get("flags", "") for c in await redis.client_list())


async def test_the_watch_names_only_its_queue_key(redis: Redis) -> None:
    watch = QueueWatch(redis, "arq:queue:a")
    pubsub = redis.pubsub()
    try:
        assert await watch.start(pubsub)
        await pubsub.get_message(timeout=1.0)  # the subscription's confirmation
        await redis.zadd("arq:queue:ab", {"x": 1})  # same prefix, another queue
        await redis.zadd("arq:queue:a", {"y": 1})
        seen = []
        while len(seen) < 2:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            assert message is not None
            seen.append(watch.concerns_queue(message))
        assert sorted(seen) == [False, True]
        assert watch.concerns_queue({"channel": b"arqscale:a:wake", "data": b"1"}) is None
    finally:
        await watch.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    # The tracking state went with its connection: no client tracks any more.
    assert not any("t" in c.get("flags", "") for c in await redis.client_list())


async def test_a_user_denied_client_commands_still_gets_wake_signals(redis: Redis, redis_url: str) -> None:
    # An ACL user without CLIENT: the watch is refused, the wake channel still works (the worker polls for arq).
    await redis.acl_setuser("nocli", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                            commands=["+@all", "-client"])  # fmt: skip
    limited = Redis.from_url(redis_url.replace("redis://", "redis://nocli:pw@"))
    watch = QueueWatch(limited, "arq:queue:a")
    pubsub = limited.pubsub()
    try:
        assert not await watch.start(pubsub)
        await pubsub.subscribe("arqscale:a:wake")
        await pubsub.get_message(timeout=1.0)
        await redis.publish("arqscale:a:wake", "1")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
        assert message is not None and message["data"] == b"1"
    finally:
        await watch.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await limited.aclose()
        await redis.acl_deluser("nocli")


async def test_an_idle_listening_worker_polls_less_and_less(redis: Redis) -> None:
    # Every enqueue reaches it as a message (wake-up or invalidation), so its fallback poll backs off: the
    # wait doubles with each empty pickup up to IDLE_POLL_MAX_SECONDS; a job or a lost subscription resets it.
    spec = make_spec(serializer="pickle", poll_interval=0.5)
    worker = Worker(spec, redis)
    async with running(worker):
        await wait_for(lambda: _listening(worker), what="the worker's subscription")
        worker._poll_wait(idle=False)  # the worker's own empty pickups have started the back-off: from the start
        waits = [worker._poll_wait(idle=True) for _ in range(8)]  # no await in between: the loop cannot interleave
        assert waits == [0.5, 1.0, 2.0, 4.0, IDLE_POLL_MAX_SECONDS, IDLE_POLL_MAX_SECONDS, 5.0, 5.0]
        assert worker._poll_wait(idle=False) == 0.5  # a job taken or running: back to poll_interval
        assert worker._poll_wait(idle=True) == 0.5
        arq = ArqRedis(connection_pool=redis.connection_pool)
        for _ in range(6):
            worker._poll_wait(idle=True)  # deep in the back-off: a plain arq job still comes in by its message
        await arq.enqueue_job("add", 1, 2, _job_id="late", _queue_name=spec.queue_key)
        await wait_for(lambda: redis.zscore(f"arqscale:{spec.name}:completed", "late"), what="the late job")


async def test_a_worker_without_client_tracking_keeps_its_poll(redis: Redis, redis_url: str) -> None:
    # Plain arq enqueues send no message to a worker whose user may not run CLIENT: it must poll at poll_interval.
    await redis.acl_setuser("nocli2", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                            commands=["+@all", "-client"])  # fmt: skip
    limited = Redis.from_url(redis_url.replace("redis://", "redis://nocli2:pw@"))
    worker = Worker(make_spec(poll_interval=0.5), limited)
    try:
        async with running(worker):
            await wait_for(lambda: _subscribed(limited, "arqscale:"), what="the wake subscription")
            assert not worker._listening
            assert [worker._poll_wait(idle=True) for _ in range(3)] == [0.5, 0.5, 0.5]
    finally:
        await limited.aclose()
        await redis.acl_deluser("nocli2")


async def _listening(worker: Worker) -> bool:
    return worker._listening


async def _subscribed(redis: Redis, prefix: str) -> bool:
    channels = await redis.pubsub_channels(f"{prefix}*")
    return bool(channels)
