"""arqscale's cluster client (``arqscale.core.cluster_client``) against the real cluster: the failover race
that ended a worker in test_cluster_failover.py, reproduced at the moment it strikes, is a
``ConnectionError`` (an outage every caller handles) rather than redis-py's internal ``AttributeError``."""

from __future__ import annotations

import pytest
import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from arqscale.core import scores
from arqscale.core.cluster_client import ResilientRedisCluster
from arqscale.core.connection import create_redis
from arqscale.core.dead_letters import DeadLetters
from arqscale.core.settings import RedisSettings
from arqscale.core.spec import parse_queues
from cluster_servers import RedisClusterSetup


async def pipeline_after_a_concurrent_close(client: RedisCluster) -> list[object]:
    """A pipeline with a failing command, run with ``raise_on_error=False`` (as the worker's pickup runs
    it) just after another task's ``aclose()`` cleared the client's default node."""
    await client.set("{race}:text", "not a number")
    client.nodes_manager.default_node = None  # what NodesManager.aclose() leaves for the next reader
    pipe = client.pipeline()
    pipe.incr("{race}:text")  # fails on the server: WRONGTYPE-like error in the reply
    pipe.get("{race}:text")
    return list(await pipe.execute(raise_on_error=False))


async def test_redis_py_leaks_an_attribute_error_there(redis_cluster: RedisClusterSetup) -> None:
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in redis_cluster.nodes])
    try:
        with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'name'"):
            await pipeline_after_a_concurrent_close(client)
    finally:
        await client.aclose()


async def test_arqscale_s_client_raises_a_connection_error_and_goes_on(redis_cluster: RedisClusterSetup) -> None:
    client = create_redis(RedisSettings(cluster_nodes=redis_cluster.seeds))
    assert isinstance(client, ResilientRedisCluster)
    try:
        with pytest.raises(redis.ConnectionError, match="closed under the command"):
            await pipeline_after_a_concurrent_close(client)
        await client.aclose()  # as after any connection error: the next command re-reads the slot map
        pipe = client.pipeline()
        pipe.set("{race}:n", 1)
        pipe.incr("{race}:n")
        assert await pipe.execute() == [True, 2]
        # Errors of the caller's own making are not disguised.
        with pytest.raises(redis.ResponseError):
            await client.incr("{race}:text")
    finally:
        await client.aclose()


async def test_a_dead_letter_purge_by_age_reads_the_clock_on_a_cluster(redis_cluster: RedisClusterSetup) -> None:
    # The purge dates its bound by Redis' TIME (a command with no key, which the cluster client sends to one node).
    spec = parse_queues({"queues": {"aged": {"functions": ["cluster_tasks.work"]}}})["aged"]
    client = create_redis(RedisSettings(cluster_nodes=redis_cluster.seeds))
    try:
        store = DeadLetters(client, spec)
        now = scores.time_ms(*await client.time())
        await client.hset(store.keys.dlq, mapping={"old": "{}", "new": "{}"})
        await client.zadd(store.keys.dlq_index, {"old": now - 5000, "new": now + 60_000})
        assert await store.purge(older_than_seconds=1) == 1
        assert await client.hkeys(store.keys.dlq) == [b"new"]
    finally:
        await client.aclose()
