"""Seeing plain arq producers' enqueues without polling: Redis' client-side caching invalidations.

arq's ``enqueue_job`` only writes the queue's sorted set; it publishes nothing, so a worker saw such jobs at
its next poll (``poll_interval``, 0.5 s by default). Redis (>= 6) can tell a client whenever keys under a
prefix change, with no server configuration (unlike keyspace notifications, which need ``CONFIG SET`` and are
often refused on managed Redis): ``CLIENT TRACKING ON REDIRECT <id> BCAST PREFIX arq:queue:<name>`` on one
connection makes Redis publish the changed key names on ``__redis__:invalidate`` to the connection ``<id>``,
which is the worker's own wake subscription (RESP2). An idle worker's Redis load does not change: nothing is
polled, Redis pushes one message per change (batched per Redis event-loop pass).

The tracking connection is held out of the pool for as long as the subscription lives and closed with it, so
the tracking state ends with it. When the subscription's connection reconnects (a new client id), Redis would
redirect to a client that is gone: ``broken`` turns true and the caller starts over. A Redis that refuses
(older than 6, ``CLIENT`` denied by an ACL) leaves the worker on its poll, as before.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from arqscale.core.keys import OWN_CHANGE_SUFFIX

logger = logging.getLogger("arqscale.worker")

INVALIDATE_CHANNEL = b"__redis__:invalidate"


class QueueWatch:
    """Invalidations of one queue key, delivered to a worker's wake subscription."""

    def __init__(self, redis: Redis, queue_key: str, *, enabled: bool = True) -> None:
        self.redis = redis
        self.queue_key = queue_key.encode()
        # Our own scripts' changes that make no job ready (or that wake a worker by themselves) write this key
        # too, in the same call: Redis then names both keys in one invalidation (they share the tracked prefix,
        # and one message carries a Redis event-loop pass's keys), and it wakes nobody.
        self.own_change = (queue_key + OWN_CHANGE_SUFFIX).encode()
        self.tracker: Connection | None = None
        self.broken = False
        # Off on Redis Cluster: no plain arq producer writes there, and the cluster client has no pool to
        # take a tracking connection from.
        self.enabled = enabled

    async def start(self, pubsub: PubSub) -> bool:
        """Before ``pubsub`` subscribes to anything: track the queue key, redirected to it. False: not
        available here (the worker polls, as before)."""
        if not self.enabled:
            return False
        await pubsub.connect()  # type: ignore[no-untyped-call]
        conn = pubsub.connection
        assert conn is not None
        try:
            await conn.send_command("CLIENT", "ID")
            client_id = int(await conn.read_response())
        except RedisError as exc:  # an ACL without CLIENT: the wake channel alone, as before
            logger.info("client tracking unavailable (%s): plain arq enqueues are seen at the next poll", exc)
            return False
        tracker: Any = await self.redis.connection_pool.get_connection()
        try:
            await tracker.send_command(
                "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX", self.queue_key
            )
            await tracker.read_response()
        except RedisError as exc:
            logger.info("client tracking unavailable (%s): plain arq enqueues are seen at the next poll", exc)
            await tracker.disconnect()
            await self.redis.connection_pool.release(tracker)
            return False
        self.tracker = tracker
        self.broken = False
        conn.register_connect_callback(self._reconnected)
        await pubsub.subscribe(INVALIDATE_CHANNEL)
        return True

    def _reconnected(self, _connection: Connection) -> None:
        self.broken = True  # a new client id: the redirect points at nobody now

    def concerns_queue(self, message: dict[str, Any]) -> bool | None:
        """None: not an invalidation; else whether it may tell of a job to run: it names the queue key without
        our own scripts' mark (a flush names none: True).

        A plain arq enqueue that lands in the same Redis event-loop pass as one of our marked changes is hidden
        by the mark: a busy worker takes it with its next pickup, an idle one at its next poll."""
        if message.get("channel") != INVALIDATE_CHANNEL:
            return None
        keys = message.get("data")
        if keys is None or not isinstance(keys, list):
            return True
        return self.queue_key in keys and self.own_change not in keys

    async def close(self) -> None:
        tracker, self.tracker = self.tracker, None
        if tracker is None:
            return
        with contextlib.suppress(Exception):
            await tracker.disconnect()  # the tracking state is the connection's: it ends here
        with contextlib.suppress(Exception):
            await self.redis.connection_pool.release(tracker)
