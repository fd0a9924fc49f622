"""Redis clients built from ``RedisSettings``: topology, password, ACL user and TLS handled in one place.

Every client of every process comes from here (the worker's loop and its wake-channel pub/sub, the
scheduler, the API, the exporter, the CLI, the demo), so the topology is decided once. With sentinels
(``REDIS_SENTINELS``) a client is redis-py's ``Sentinel.master_for``: each new connection asks the
sentinels where the primary is, a connection whose server went away or turned into a replica
(``READONLY``) is dropped, and the next command connects to the new primary. The processes already
treat a failed call as an outage (503 in the API, ``redis_up 0`` in the exporter, retry in the
worker), so a failover is a short outage to them, followed without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from typing import Any, cast

import redis as sync_redis
import redis.sentinel as sync_sentinel
from redis.asyncio import Redis
from redis.asyncio import sentinel as async_sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arqscale.core.settings import RedisSettings


class MasterNotFound(async_sentinel.MasterNotFoundError, sync_sentinel.MasterNotFoundError):
    """No primary to connect to: the message says whether the sentinels are unreachable, know no master
    of that name, or report it down (a failover in progress). A ``ConnectionError``: an outage to callers."""


class SentinelConfigError(MasterNotFound):
    """The sentinels answer but cannot serve these settings (unknown master name, not a sentinel): no
    retry will help, so start-up stops on it (``check_topology``)."""


def client_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """Extra keyword arguments for ``Redis.from_url`` (TLS files, timeouts).

    Every client has a socket timeout as well as a connect timeout: a Redis that is frozen or cut off by a
    partition accepts the connection (or already has it) and then never answers, and without one a call
    waits for as long as the freeze lasts. Processes that must answer faster pass a shorter one (the API).
    """
    kwargs: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 5, "health_check_interval": 30}
    if settings.uses_tls:
        kwargs |= _tls_kwargs(settings)
    return kwargs


def _tls_kwargs(settings: RedisSettings) -> dict[str, Any]:
    # redis-py's asyncio client takes the names, not ``ssl.VerifyMode``: given ``ssl.CERT_REQUIRED`` it
    # silently leaves its context half-built and every TLS connection fails (tests/system/test_redis_tls.py).
    kwargs: dict[str, Any] = {
        "ssl_cert_reqs": "none" if settings.tls_insecure else "required",
        "ssl_check_hostname": not settings.tls_insecure,
    }
    if settings.tls_ca_file is not None:
        kwargs["ssl_ca_certs"] = str(settings.tls_ca_file)
    if settings.tls_cert_file is not None:
        kwargs["ssl_certfile"] = str(settings.tls_cert_file)
    if settings.tls_key_file is not None:
        kwargs["ssl_keyfile"] = str(settings.tls_key_file)
    return kwargs


def _sentinel_parts(settings: RedisSettings, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keyword arguments for the primary's connections, for the sentinels' connections)."""
    data = {k: v for k, v in kwargs.items() if not k.startswith("ssl_")}
    data |= {"db": settings.db, "username": settings.username}
    data["password"] = settings.password.get_secret_value() if settings.password is not None else None
    if settings.tls:
        data |= {"ssl": True} | {k: v for k, v in kwargs.items() if k.startswith("ssl_")}
    # The sentinels answer one small command each: the same timeouts, their own credentials and TLS.
    sentinel = {k: v for k, v in kwargs.items() if k in ("socket_connect_timeout", "socket_timeout")}
    sentinel["username"] = settings.sentinel_username
    if settings.sentinel_password is not None:
        sentinel["password"] = settings.sentinel_password.get_secret_value()
    if settings.sentinel_tls:
        sentinel |= {"ssl": True} | _tls_kwargs(settings)
    return data, sentinel


class _Survey:
    """The sentinels' answers to ``SENTINEL MASTERS``, one by one, until one names a primary that is up;
    shared by the asyncio and the blocking lookups."""

    def __init__(self, settings: RedisSettings, check: Any) -> None:
        self.settings, self.check = settings, check
        self.errors: list[str] = []
        self.refused: list[str] = []
        self.known: set[str] = set()
        self.down = False

    def add(self, address: str, answer: Any) -> tuple[str, int] | None:
        if isinstance(answer, ResponseError) and "unknown command" in str(answer).lower():
            self.refused.append(address)  # not a sentinel: a data node knows no SENTINEL command
            return None
        if isinstance(answer, BaseException):
            self.errors.append(f"{address}: {type(answer).__name__}: {answer}")
            return None
        name = self.settings.sentinel_master
        self.known.update(answer)
        state = answer.get(name)
        if state and self.check(state, name):
            return state["ip"], state["port"]
        self.down = self.down or bool(state)
        return None

    def problem(self) -> MasterNotFound:
        """The error for a lookup that found no primary, naming what is wrong (never a password)."""
        name = self.settings.sentinel_master
        where = ", ".join(f"{h}:{p}" for h, p in self.settings.sentinel_addresses())
        if self.down:
            return MasterNotFound(
                f"the sentinels ({where}) report master {name!r} down: a failover is in progress, "
                "or no replica can take over"
            )
        if self.known or (not self.errors and not self.refused):
            watched = ", ".join(repr(k) for k in sorted(self.known)) or "none"
            return SentinelConfigError(
                f"the sentinels ({where}) watch no master named {name!r} (they watch: {watched}); "
                "check REDIS_SENTINEL_MASTER"
            )
        if self.refused and not self.errors:
            return SentinelConfigError(
                f"{', '.join(self.refused)}: not a Redis Sentinel (SENTINEL MASTERS refused); "
                "REDIS_SENTINELS must list the sentinels' addresses, not the data nodes'"
            )
        return MasterNotFound(f"no sentinel answers ({'; '.join(self.errors + self.refused)}); check REDIS_SENTINELS")


def _address(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


class _AsyncSentinel(async_sentinel.Sentinel):
    settings: RedisSettings

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        survey = _Survey(self.settings, self.check_master_state)
        for number, sentinel in enumerate(self.sentinels):
            try:
                answer: Any = await sentinel.sentinel_masters()  # type: ignore[no-untyped-call]
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                answer = exc
            found = survey.add(_address(sentinel), answer)
            if found is not None:
                # Ask the sentinel that answered first next time (as redis-py does).
                self.sentinels[0], self.sentinels[number] = sentinel, self.sentinels[0]
                return found
        raise survey.problem()


class _AsyncPool(async_sentinel.SentinelConnectionPool):
    """redis-py's pool asks the sentinels only when it opens a connection, so pooled connections keep
    writing to an old primary that is still alive (a manual failover, a partition) until the sentinels
    demote it, seconds later (9.3 s measured on loopback), and those writes are lost when it
    resyncs. This pool also asks every
    ``recheck_seconds`` in the background (never making a command wait on the sentinels) and drops
    connections to an address that is no longer the primary before handing them out."""

    recheck_seconds: float = 1.0
    _next_check: float = 0.0
    _check: asyncio.Task[None] | None = None

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        now = time.monotonic()
        if self.recheck_seconds and now >= self._next_check and (self._check is None or self._check.done()):
            self._next_check = now + self.recheck_seconds
            self._check = asyncio.ensure_future(self._recheck())
        connection = await super().get_connection()  # redis-py 5.3 deprecates passing the command
        if (
            self.master_address is not None
            and connection.host
            and (connection.host, connection.port) != self.master_address
        ):
            try:  # it was in use when the primary changed: reconnect it to the new one
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)  # as redis-py does when a checkout fails
                raise
        return connection

    async def _recheck(self) -> None:
        # Unreachable sentinels, or a primary they report down, change nothing here: the connections'
        # own errors show an outage. A new address drops the idle connections (redis-py's own step).
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            await self.get_master_address()  # type: ignore[no-untyped-call]

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if inuse_connections and self._check is not None:
            # The client is closing. A recheck still asking the sentinels would open a connection after theirs
            # were closed below, left to the garbage collector (an "unclosed transport" warning): end it first.
            check, self._check = self._check, None
            check.cancel()
            await asyncio.wait({check})
            if not check.cancelled():
                check.exception()  # retrieved, not raised: an outage shows in the commands' own errors
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client is closing: close the sentinels' connections too
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()


class _SyncSentinel(sync_sentinel.Sentinel):
    settings: RedisSettings

    def discover_master(self, service_name: str) -> tuple[str, int]:
        survey = _Survey(self.settings, self.check_master_state)
        for number, sentinel in enumerate(self.sentinels):
            try:
                answer: Any = sentinel.sentinel_masters()  # type: ignore[no-untyped-call]
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                answer = exc
            found = survey.add(_address(sentinel), answer)
            if found is not None:
                self.sentinels[0], self.sentinels[number] = sentinel, self.sentinels[0]
                return found
        raise survey.problem()


class _SyncPool(sync_sentinel.SentinelConnectionPool):
    """No background re-check here: the blocking clients (the loop watchdog's reports, the demo's
    checks) write rarely, and leave a demoted primary on its first READONLY."""

    def disconnect(self, inuse_connections: bool = True) -> None:
        super().disconnect(inuse_connections)
        if inuse_connections:
            for sentinel in self.sentinel_manager.sentinels:
                sentinel.connection_pool.disconnect()


def _cluster_kwargs(settings: RedisSettings, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a cluster client: every node's credentials and TLS; no db (a cluster has db 0)."""
    out = {k: v for k, v in kwargs.items() if k != "health_check_interval"}
    out["username"] = settings.username
    out["password"] = settings.password.get_secret_value() if settings.password is not None else None
    if settings.tls:
        out["ssl"] = True
    return out


# A failover moves slots: the client re-reads the slot map on MOVED and on a connection error, and retries a
# command up to this many times meanwhile (redis-py's default, named for the reader).
_CLUSTER_RETRIES = {"cluster_error_retry_attempts": 3}


_LEAKED = (
    (AttributeError, "'NoneType' object has no attribute"),  # a closed connection's writer, a cleared node
    (TypeError, "'NoneType' object is not callable"),  # asyncio's transport torn down under a write
)


def leaked_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py's asyncio code failing on a connection or node map another task closed
    under it (``cluster_client`` says when this happens), rather than a fault of the caller: one of the
    ``_LEAKED`` errors, raised with redis-py's asyncio modules on the stack."""
    if not any(isinstance(exc, kind) and str(exc).startswith(text) for kind, text in _LEAKED):
        return False
    return any(_REDIS_ASYNCIO in frame.f_code.co_filename for frame, _ in traceback.walk_tb(exc.__traceback__))


_REDIS_ASYNCIO = "/redis/asyncio/"


def create_redis(settings: RedisSettings, **overrides: Any) -> Redis:
    """An asyncio Redis client. Errors it raises name ``settings.display_url()``, never the password.

    With ``REDIS_CLUSTER_NODES`` a ``redis.asyncio.cluster.RedisCluster`` (the type checks treat it as a
    ``Redis``: it answers the same commands; where it does not, the callers ask ``keys.is_cluster``)."""
    kwargs = client_kwargs(settings)
    kwargs.update(overrides)
    if settings.topology == "cluster":
        from redis.asyncio.cluster import ClusterNode

        from arqscale.core.cluster_client import ResilientRedisCluster

        nodes = [ClusterNode(host, port) for host, port in settings.cluster_addresses()]
        cluster: Any = ResilientRedisCluster(
            startup_nodes=nodes, **_cluster_kwargs(settings, kwargs), **_CLUSTER_RETRIES
        )
        return cast(Redis, cluster)
    if settings.topology == "sentinel":
        data, sentinel_kwargs = _sentinel_parts(settings, kwargs)
        manager = _AsyncSentinel(settings.sentinel_addresses(), sentinel_kwargs=sentinel_kwargs, **data)  # type: ignore[no-untyped-call]
        manager.settings = settings
        master: Redis = manager.master_for(settings.sentinel_master, connection_pool_class=_AsyncPool)
        pool = master.connection_pool
        assert isinstance(pool, _AsyncPool)
        pool.recheck_seconds = settings.sentinel_recheck_seconds
        return master
    client: Redis = Redis.from_url(settings.connection_url(), **kwargs)
    return client


def create_sync_redis(settings: RedisSettings, **overrides: Any) -> sync_redis.Redis:
    """A blocking client (the worker's loop watchdog thread, the demo's checks), built as ``create_redis``."""
    kwargs = client_kwargs(settings)
    kwargs.update(overrides)
    if settings.topology == "cluster":
        from redis.cluster import ClusterNode as SyncClusterNode
        from redis.cluster import RedisCluster as SyncRedisCluster

        nodes = [SyncClusterNode(host, port) for host, port in settings.cluster_addresses()]  # type: ignore[no-untyped-call]
        cluster: Any = SyncRedisCluster(startup_nodes=nodes, **_cluster_kwargs(settings, kwargs), **_CLUSTER_RETRIES)
        return cast(sync_redis.Redis, cluster)
    if settings.topology == "sentinel":
        data, sentinel_kwargs = _sentinel_parts(settings, kwargs)
        manager = _SyncSentinel(settings.sentinel_addresses(), sentinel_kwargs=sentinel_kwargs, **data)  # type: ignore[no-untyped-call]
        manager.settings = settings
        master: sync_redis.Redis = manager.master_for(settings.sentinel_master, connection_pool_class=_SyncPool)  # type: ignore[no-untyped-call]
        return master
    client: sync_redis.Redis = sync_redis.Redis.from_url(settings.connection_url(), **kwargs)
    return client


# What a cluster node answers to the commands of a client that does not know it is one.
PLAIN_ARQ_ON_CLUSTER = (
    "plain arq producers cannot enqueue to a Redis Cluster (arq has no cluster client, and its job keys "
    "cannot share a queue's hash slot): enqueue through arqscale's Producer, HTTP API or CLI"
)


def check_topology(settings: RedisSettings, timeout: float = 2.0) -> str | None:
    """At start-up: the problem with the Redis settings that no retry can fix, or None.

    Sentinels that answer but know no such master; one server configured (``REDIS_URL``) that is a cluster
    node, whose every command on another shard's keys would fail with ``MOVED``; cluster seed nodes that are
    not cluster nodes. Unreachable servers are not such a problem: they may be starting beside us, and the
    process retries and says so."""
    if settings.topology == "sentinel":
        return _check_sentinels(settings, timeout)
    kwargs = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if settings.topology == "cluster":
        host, port = settings.cluster_addresses()[0]
        node = sync_redis.Redis(host=host, port=port, **(_cluster_kwargs(settings, client_kwargs(settings)) | kwargs))
        if _cluster_enabled(node) is False:
            return (
                f"REDIS_CLUSTER_NODES names {host}:{port}, which is not a cluster node (cluster_enabled:0): "
                "point REDIS_URL at a single server instead"
            )
        return None
    return _standalone_problem(_cluster_enabled(create_sync_redis(settings, **kwargs)))


async def check_topology_on(settings: RedisSettings, redis: Redis) -> str | None:
    """``check_topology`` for a process whose loop already runs, beside its first commands rather than before
    them (the worker: cold start, bench/cold_start.py). One server, the common case, is asked on ``redis``,
    the client the process uses anyway; sentinels and cluster seed nodes are asked by ``check_topology`` in a
    thread (their blocking clients)."""
    if settings.topology != "standalone":
        return await asyncio.to_thread(check_topology, settings)
    try:
        info = await redis.info("cluster")
    except (RedisConnectionError, RedisTimeoutError, ResponseError):
        return None
    return _standalone_problem(_enabled(info))


def _standalone_problem(cluster_enabled: bool | None) -> str | None:
    if not cluster_enabled:
        return None
    return (
        "this server is a Redis Cluster node: set REDIS_CLUSTER_NODES=host:port,... (and unset REDIS_URL/"
        "REDIS_HOST) so arqscale uses its cluster key layout, each queue's keys in one hash slot. "
        + PLAIN_ARQ_ON_CLUSTER
    )


def _cluster_enabled(client: sync_redis.Redis) -> bool | None:
    """Whether the server says it is a cluster node; None when it cannot be asked (not up yet). Closes ``client``."""
    try:
        info = client.info("cluster")
    except (RedisConnectionError, RedisTimeoutError, ResponseError):
        return None
    finally:
        client.close()
    return _enabled(info)


def _enabled(info: Any) -> bool | None:
    value = info.get("cluster_enabled") if isinstance(info, dict) else None
    return None if value is None else bool(int(value))


def _check_sentinels(settings: RedisSettings, timeout: float) -> str | None:
    """The problem with sentinel settings that no retry can fix, or None.

    Unreachable sentinels are not such a problem (they may be starting beside us; the process retries
    and says so), but sentinels that answer and know no master of that name are."""
    data, sentinel_kwargs = _sentinel_parts(
        settings, client_kwargs(settings) | {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    )
    manager = _SyncSentinel(settings.sentinel_addresses(), sentinel_kwargs=sentinel_kwargs, **data)  # type: ignore[no-untyped-call]
    manager.settings = settings
    try:
        manager.discover_master(settings.sentinel_master)
    except SentinelConfigError as exc:
        return str(exc)
    except MasterNotFound:
        return None
    finally:
        for sentinel in manager.sentinels:
            sentinel.close()
    return None


async def node_client(redis: Any, key: str) -> Redis:
    """A plain client to the cluster node that serves ``key``'s slot, with the cluster client's credentials
    and TLS: for pub/sub, which redis-py's asyncio cluster client does not offer. A message published on
    any node reaches the subscribers of every node (the cluster bus carries it), so any node would do;
    the key's own keeps a queue's wake-ups on its shard."""
    from redis.asyncio.connection import ConnectionPool

    await redis.initialize()  # the slot map, read once per client (a no-op after the first call)
    node = redis.get_node_from_key(key)
    # The node's connection settings already name its host and port (and the cluster's credentials and TLS).
    pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    return Redis(connection_pool=pool)


async def info_per_node(redis: Any, section: str) -> list[dict[str, Any]]:
    """``INFO <section>`` of the server, or of every node of a cluster (its client answers a dict per node)."""
    from arqscale.core.keys import is_cluster

    if not is_cluster(redis):
        return [await redis.info(section)]
    replies = await redis.info(section, target_nodes=redis.ALL_NODES)
    return [r for r in replies.values() if isinstance(r, dict)] if isinstance(replies, dict) else []
