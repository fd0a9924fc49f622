"""Start-up refuses Redis settings that name the wrong kind of server, with a message that says what to set:
``REDIS_URL`` pointed at a cluster node (every command on another shard's keys would fail with MOVED, and plain
arq producers cannot use a cluster either), or ``REDIS_CLUSTER_NODES`` pointed at a plain server.

Each case is checked both ways: ``check_topology`` (blocking, before a command starts) and ``check_topology_on``
(the worker's: on its own client, beside its first pickup)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from arqscale.core.connection import check_topology, check_topology_on, create_redis
from arqscale.core.settings import RedisSettings
from cluster_servers import RedisClusterSetup
from redis_server import free_port


async def both_ways(settings: RedisSettings, wait: float = 2.0) -> tuple[str | None, str | None]:
    redis = create_redis(settings, socket_connect_timeout=wait, socket_timeout=wait)
    try:
        on_client = await check_topology_on(settings, redis)
    finally:
        await redis.aclose()
    return check_topology(settings, timeout=wait), on_client


async def test_a_url_naming_a_cluster_node_is_refused(redis_cluster: RedisClusterSetup) -> None:
    for problem in await both_ways(RedisSettings(url=f"redis://{redis_cluster.nodes[0].address}/0")):
        assert problem is not None
        assert "REDIS_CLUSTER_NODES" in problem and "plain arq producers cannot enqueue to a Redis Cluster" in problem


async def test_cluster_nodes_naming_a_cluster_pass(redis_cluster: RedisClusterSetup) -> None:
    assert await both_ways(RedisSettings(cluster_nodes=redis_cluster.seeds)) == (None, None)


async def test_cluster_nodes_naming_a_plain_server_are_refused(redis_url: str) -> None:
    address = redis_url.removeprefix("redis://").split("/")[0]
    for problem in await both_ways(RedisSettings(cluster_nodes=address)):
        assert problem is not None and f"names {address}, which is not a cluster node" in problem


async def test_a_plain_server_passes(redis_url: str) -> None:
    assert await both_ways(RedisSettings(url=redis_url)) == (None, None)


async def test_a_server_not_up_yet_is_no_reason_to_stop() -> None:
    port = free_port()
    assert await both_ways(RedisSettings(cluster_nodes=f"127.0.0.1:{port}"), wait=0.5) == (None, None)
    assert await both_ways(RedisSettings(url=f"redis://127.0.0.1:{port}/0"), wait=0.5) == (None, None)


def test_a_worker_on_a_cluster_node_stops_with_the_problem(redis_cluster: RedisClusterSetup, tmp_path: Path) -> None:
    """The worker checks beside its first pickup, not before it: it still exits 2 with the one line every
    command prints."""
    queues = tmp_path / "queues.yaml"
    queues.write_text("queues:\n  q:\n    functions: [worker_tasks.sleep]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {
        "REDIS_URL": f"redis://{redis_cluster.nodes[0].address}/0",
        "ARQSCALE_QUEUES_FILE": str(queues),
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "arqscale", "worker", "--queue", "q", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    line = f"arqscale: Redis redis://{redis_cluster.nodes[0].address}/0: this server is a Redis Cluster node"
    assert line in done.stderr and "Traceback" not in done.stderr
