"""The counts on Redis Cluster take one round trip per shard, not one per queue: each queue is its own
script call (a script may touch one slot), and the cluster pipeline sends every shard its calls at once.
Checked by counting what reaches each node: the pipelines written to it, and the script calls in them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode

from arqscale.core.connection import create_redis
from arqscale.core.counts import CountsReader
from arqscale.core.models import JobRequest
from arqscale.core.producer import Producer
from arqscale.core.settings import RedisSettings
from arqscale.core.spec import parse_queues
from cluster_servers import RedisClusterSetup


async def test_counting_nine_queues_on_three_shards_is_three_round_trips(
    redis_cluster: RedisClusterSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"{n}_{i}" for n in redis_cluster.names_on_distinct_primaries(3) for i in range(3)]
    specs = parse_queues({"queues": {n: {"functions": ["cluster_tasks.work"]} for n in names}})
    redis = create_redis(RedisSettings(cluster_nodes=redis_cluster.seeds))
    try:
        producer = Producer(redis, specs)
        for i, name in enumerate(names):
            await producer.enqueue_many(name, [JobRequest(function="work", args=[j]) for j in range(i + 1)])
        reader = CountsReader(redis)
        await reader.read(specs)  # scripts loaded, slot map read
        pipelines: Counter[str] = Counter()
        calls: Counter[str] = Counter()
        real = ClusterNode.execute_pipeline

        async def counted(node: ClusterNode, commands: Any) -> Any:
            pipelines[node.name] += 1
            calls[node.name] += len(commands)
            return await real(node, commands)

        monkeypatch.setattr(ClusterNode, "execute_pipeline", counted)
        counts = await reader.read(specs)
    finally:
        await redis.aclose()
    shards = {redis_cluster.primary_for_key(f"arqscale:{{{n}}}:queue").port for n in names}
    assert len(shards) == 3
    assert len(pipelines) == 3 and set(pipelines.values()) == {1}  # one write per shard for nine queues
    assert sum(calls.values()) == len(names)  # a script call per queue, each on its own queue's shard
    assert [counts[n].waiting for n in names] == list(range(1, len(names) + 1))
