"""A Redis connection closed under a request is an outage (503), not a bug (500).

redis-py's asyncio connection lets the transport's own ``AttributeError`` out when another task closed
the connection between connecting and writing (its cluster client does this to every node's connections
when one node fails: a Redis Cluster failover, docs/reliability.md). Reproduced here on a real
connection to the session's redis-server, closed at the moment the cluster client's close hits it,
through the API's error middleware."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio.connection import Connection

from arqscale.api.app import errors_middleware
from arqscale.core.connection import leaked_connection_error
from redis_server import RedisServer


class ClosedBeforeItsWrite(Connection):
    """A connection another task closes in the moment ``asyncio.wait_for`` (``socket_timeout``) yields
    between redis-py's connected check and its write: what the cluster client's ``aclose()`` does to
    connections other requests are using."""

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        await self.disconnect()
        await super()._send_packed_command(command)


async def write_on_a_closed_connection(port: int) -> None:
    connection = ClosedBeforeItsWrite(port=port, socket_timeout=1)
    try:
        await connection.send_command("PING")
    finally:
        await connection.disconnect()


async def test_the_race_is_told_apart_from_our_own_attribute_errors(redis_server: RedisServer) -> None:
    try:
        await write_on_a_closed_connection(redis_server.port)
    except AttributeError as exc:
        assert leaked_connection_error(exc)
    else:
        raise AssertionError("redis-py now raises ConnectionError here: the workaround can go")
    try:
        None.upper()  # type: ignore[attr-defined]
    except AttributeError as exc:
        assert not leaked_connection_error(exc)


async def test_the_api_answers_503_for_it_and_500_for_a_bug(redis_server: RedisServer) -> None:
    async def race(request: web.Request) -> web.Response:
        await write_on_a_closed_connection(redis_server.port)
        return web.json_response({})

    async def bug(request: web.Request) -> web.Response:
        raise AttributeError("ours")

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/race", race)
    app.router.add_get("/bug", bug)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/race")
        body: dict[str, Any] = await response.json()
        assert (response.status, body["error"]) == (503, "redis_unavailable")
        response = await client.get("/bug")
        assert response.status == 500
