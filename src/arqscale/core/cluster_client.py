"""redis-py's asyncio Redis Cluster client, with its failover races raised as ``ConnectionError``.

While a primary fails over, redis-py's ``RedisCluster`` closes every node's connections (``aclose()``)
whenever a command to any node fails, from whichever task saw the error. Other tasks of the same process
that use the client at that moment get the internals' own errors instead of a ``ConnectionError``:

- ``AttributeError: 'NoneType' object has no attribute 'writelines'``: a connection closed between
  redis-py's connected check and its write (redis-py issues 3546 and 4287);
- ``AttributeError: 'NoneType' object has no attribute 'name'``: a pipeline run with
  ``raise_on_error=False`` reads the default node that ``aclose()`` has just cleared (issue 3835).

arqscale treats a ``ConnectionError`` as an outage everywhere (the API answers 503, the worker retries,
the exporter reports ``redis_up 0``); the errors above ended a worker process in the cluster failover test
(tests/cluster/test_cluster_failover.py). The client made here re-raises exactly those, when redis-py's
own asyncio code raised them (``connection.leaked_connection_error``), as ``ConnectionError``; anything
else passes unchanged.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from arqscale.core.connection import leaked_connection_error


def _as_connection_error(exc: Exception) -> Exception:
    if leaked_connection_error(exc):
        return RedisConnectionError(f"cluster connection closed under the command ({exc})")
    return exc


class ResilientClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except (AttributeError, TypeError) as exc:
            converted = _as_connection_error(exc)
            if converted is exc:
                raise
            raise converted from exc


class ResilientRedisCluster(RedisCluster):
    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except (AttributeError, TypeError) as exc:
            converted = _as_connection_error(exc)
            if converted is exc:
                raise
            raise converted from exc

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        # RedisCluster.pipeline's own refusals, then our pipeline class.
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        if transaction:
            raise RedisClusterException("transaction is deprecated in cluster mode")
        return ResilientClusterPipeline(self)  # type: ignore[abstract]  # as redis-py's own pipeline()
