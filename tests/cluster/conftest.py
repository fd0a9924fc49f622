"""Fixtures for the Redis Cluster tests: a real six-node cluster (``tests/cluster_servers.py``) per test
module, emptied and checked fully ok before each test; every node is SIGKILLed at the module's end,
whatever happened."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster_servers import RedisClusterSetup


@pytest.fixture(scope="module")
def cluster_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSetup]:
    setup = RedisClusterSetup(tmp_path_factory.mktemp("cluster"))
    try:
        yield setup.start()
    finally:
        setup.stop()


@pytest.fixture
def redis_cluster(cluster_setup: RedisClusterSetup) -> RedisClusterSetup:
    """The module's cluster, with every node running (a node a failed test killed is restarted), fully
    ok and empty."""
    for node in cluster_setup.nodes:
        if not node.alive:
            cluster_setup.restart(node)
    cluster_setup.wait_until_ok(30)
    cluster_setup.flushall()
    return cluster_setup
