"""The cluster harness itself (``tests/cluster_servers.py``): the cluster forms with three primaries and
a replica each, a SIGKILLed primary's replica takes over within seconds, a plain redis-py
``RedisCluster`` client follows it, and the killed node comes back as a replica."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode

from cluster_servers import RedisClusterSetup, slot_of


def test_cluster_forms_with_three_primaries_each_with_a_replica(redis_cluster: RedisClusterSetup) -> None:
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    assert all(len(redis_cluster.replicas_of(p)) == 1 for p in primaries)
    owners = redis_cluster.slot_owners()
    assert sum(end - start + 1 for start, end in owners) == 16384
    for node in redis_cluster.nodes:
        assert node.cluster_info()["cluster_state"] == "ok"


def test_hash_tags_pick_the_slot_and_names_spread_over_primaries(redis_cluster: RedisClusterSetup) -> None:
    assert slot_of("arqscale:{email}:queue") == slot_of("arqscale:{email}:job:1") == slot_of("email")
    names = redis_cluster.names_on_distinct_primaries(3)
    owners = {redis_cluster.primary_for_key(f"arqscale:{{{n}}}:queue").port for n in names}
    assert len(owners) == 3
    with redis_cluster.client() as client:
        for name in names:
            client.set(f"arqscale:{{{name}}}:probe", name)
    for name in names:  # each key is on the primary the harness says, read from that node alone
        with redis_cluster.primary_for_key(f"arqscale:{{{name}}}:probe").client() as node:
            assert node.get(f"arqscale:{{{name}}}:probe") == name


def test_sigkill_of_a_primary_promotes_its_replica_and_a_client_follows(redis_cluster: RedisClusterSetup) -> None:
    key = "{busy}:counter"
    with redis_cluster.client(cluster_error_retry_attempts=10) as client:
        client.set(key, 1)
        old = redis_cluster.primary_for_key(key)
        (replica,) = redis_cluster.replicas_of(old)
        with old.client() as direct:
            assert direct.execute_command("WAIT", 1, 5000) == 1  # the replica has the key
        new, took = redis_cluster.fail_primary(old, within=30)
        assert new is replica
        assert took < 15, took  # node timeout 1 s: detection, election and gossip take a few seconds
        # The same client object, never rebuilt, reads and writes through the new primary.
        deadline = time.monotonic() + 15
        while True:
            try:
                assert client.incr(key) == 2
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert client.get(key) == "2"
    redis_cluster.restart(old)
    assert redis_cluster.replicas_of(new) == [old]  # back as the new primary's replica


async def test_async_client_follows_a_failover(redis_cluster: RedisClusterSetup) -> None:
    """redis-py's asyncio ``RedisCluster`` (the one arqscale's cluster mode builds on) refreshes its
    slot map after the primary it held connections to is gone."""
    key = "{async}:n"
    client = AsyncRedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in redis_cluster.nodes],
        decode_responses=True,
        socket_timeout=1,
    )
    try:
        await client.set(key, 1)
        old = redis_cluster.primary_for_key(key)
        with old.client() as direct:
            assert direct.execute_command("WAIT", 1, 5000) == 1
        redis_cluster.fail_primary(old, within=30)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert await client.incr(key) == 2
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert await client.get(key) == "2"
    finally:
        await client.aclose()
    redis_cluster.restart(old)


def test_a_password_applies_to_every_node(tmp_path: Path) -> None:
    setup = RedisClusterSetup(tmp_path / "auth", password="cluster-secret-1").start()
    try:
        assert setup.env() == {"REDIS_CLUSTER_NODES": setup.seeds, "REDIS_PASSWORD": "cluster-secret-1"}
        with setup.client() as client:
            client.set("{a}k", "v")
            assert client.get("{a}k") == "v"
        for node in setup.nodes:
            with pytest.raises(redis.AuthenticationError), redis.Redis(port=node.port) as anonymous:
                anonymous.ping()
        # Replicas authenticate to their primaries (masterauth): all in sync, so a failover works too.
        old = setup.primary_for_key("{a}k")
        # Replication is asynchronous: wait for the replica to hold the write, or the failover may lose it.
        with old.client(timeout=15) as primary:
            assert primary.execute_command("WAIT", 1, 10_000) == 1
        new, _ = setup.fail_primary(old, within=30)
        with setup.client() as client:
            assert client.get("{a}k") == "v"
        assert new is not old
    finally:
        setup.stop()
    assert not setup.alive()
