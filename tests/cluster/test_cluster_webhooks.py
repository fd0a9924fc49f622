"""Webhooks and job logs on Redis Cluster: a real worker and a real ``arqscale webhooks`` deliverer pointed at
the cluster turn two queues' events (each queue on its own shard) into signed webhooks for the queues'
endpoints and the jobs' callback URLs; the jobs' log lines are read back through the cluster layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from arqscale.core import job_logs
from arqscale.core.connection import create_redis
from arqscale.core.keys import QueueKeys
from arqscale.core.producer import Producer
from arqscale.core.settings import RedisSettings
from cluster_servers import RedisClusterSetup
from webhook_support import (
    SECRET_ENV,
    DelivererProcess,
    Receiver,
    hooks_queue,
    kill_started,
    process_env,
    receiving,
    specs_of,
    until,
)
from worker_processes import stop_all, worker_starter


async def test_events_of_queues_on_two_shards_become_webhooks(redis_cluster: RedisClusterSetup, tmp_path: Path) -> None:
    first, second = redis_cluster.names_on_distinct_primaries(2, prefix="hooks")
    receiver = Receiver()
    template = hooks_queue(receiver, poll_interval=0.1)["q"]
    queues: dict[str, Any] = {name: template for name in (first, second)}
    specs = specs_of(queues)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env = process_env(base | redis_cluster.env(), tmp_path, queues)
    start, started = worker_starter(env, tmp_path)
    redis = create_redis(RedisSettings(cluster_nodes=redis_cluster.seeds))
    try:
        async with receiving(receiver):
            for name in (first, second):
                await start(queues, name, env=SECRET_ENV).ready()
            await DelivererProcess(env | SECRET_ENV, tmp_path / "deliverer.log").ready()
            producer = Producer(redis, specs)
            for name in (first, second):
                for i in range(5):
                    callback = receiver.url(f"cb-{name}-{i}") if i % 2 == 0 else None
                    await producer.enqueue(name, "say", f"{name} {i}", job_id=f"{name}-{i}", callback_url=callback)
            # main: the final event of 10 jobs; callbacks: those of 3 jobs per queue.
            await until(lambda: len(receiver.ids()) == 10 + 6, "every webhook", within=60)
        assert not receiver.rejected
        finals = {r.body["data"]["job_id"]: r.body for r in receiver.received if r.path == "main"}
        assert set(finals) == {f"{n}-{i}" for n in (first, second) for i in range(5)}
        assert all(b["type"] == "job.completed" for b in finals.values())
        assert {r.path for r in receiver.received if r.path.startswith("cb-")} == {
            f"cb-{n}-{i}" for n in (first, second) for i in (0, 2, 4)
        }
        key = await job_logs.log_key(redis, specs, f"{second}-3")
        assert key == QueueKeys.of(specs[second], redis).logs(f"{second}-3")
        page = await job_logs.read(redis, f"{second}-3", key=key)
        assert [line.message for line in page.lines][:1] == [f"{second} 3"]
    finally:
        await redis.aclose()
        kill_started()
        stop_all(started)
