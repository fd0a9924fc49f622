"""Redis AUTH: a password on the default user and a least-privilege ACL user, against a real redis-server.

The ACL user below is the one docs/security.md recommends: only arqscale's and arq's keys
(``~arq:* ~arqscale:*``), only arqscale's pub/sub channels (``&arqscale:*``), no dangerous commands
(``-@dangerous``: no FLUSHALL, KEYS, CONFIG, DEBUG, ...). Every process must work with it, through
``REDIS_URL`` and through ``REDIS_HOST``/``REDIS_PORT``/``REDIS_USERNAME``/``REDIS_PASSWORD``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from arqscale.core.connection import create_redis
from chaos_tasks import (
    CONN_QUEUES,
    clean_env,
    command_exists,
    enqueue_idle,
    prove_api,
    prove_cli,
    prove_exporter,
    prove_worker,
    redis_settings_from_env,
    write_queues_file,
)
from redis_server import RedisServer

PASSWORD = "auth-Default-Pa55word"
ACL_USER, ACL_PASSWORD = "arqscale-app", "auth-Acl-Pa55word-q7"
ACL_RULES = ["~arq:*", "~arqscale:*", "resetchannels", "&arqscale:*", "+@all", "-@dangerous"]


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    acl = ["--user", ACL_USER, "on", f">{ACL_PASSWORD}", *ACL_RULES]
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), password=PASSWORD, extra_args=acl).start()
    yield server
    server.kill()


@pytest.fixture
async def admin(auth_redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis(port=auth_redis.port, password=PASSWORD)
    await client.flushall()
    yield client
    await client.aclose()


def _url_env(server: RedisServer) -> dict[str, str]:
    return {"REDIS_URL": f"redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{server.port}/0"}


def _fields_env(server: RedisServer) -> dict[str, str]:
    return {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(server.port),
        "REDIS_USERNAME": ACL_USER,
        "REDIS_PASSWORD": ACL_PASSWORD,
    }


async def _whoami(env: dict[str, str]) -> str:
    client = create_redis(redis_settings_from_env(env))
    try:
        who = await client.acl_whoami()
        return who.decode() if isinstance(who, bytes) else str(who)
    finally:
        await client.aclose()


# ------------------------------------------------------------------ the client: create_redis


async def test_default_user_password_in_the_url(auth_redis: RedisServer) -> None:
    assert await _whoami({"REDIS_URL": auth_redis.url}) == "default"


async def test_default_user_password_as_a_variable(auth_redis: RedisServer) -> None:
    env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(auth_redis.port), "REDIS_PASSWORD": PASSWORD}
    assert await _whoami(env) == "default"


@pytest.mark.parametrize("form", ["url", "fields"])
async def test_acl_user(form: str, auth_redis: RedisServer) -> None:
    env = _url_env(auth_redis) if form == "url" else _fields_env(auth_redis)
    assert await _whoami(env) == ACL_USER


async def test_the_acl_user_is_confined_to_arqscale_keys(auth_redis: RedisServer) -> None:
    client = create_redis(redis_settings_from_env(_fields_env(auth_redis)))
    try:
        with pytest.raises(NoPermissionError):
            await client.set("someone-elses-key", 1)
        with pytest.raises(NoPermissionError):
            await client.flushall()
    finally:
        await client.aclose()


async def test_a_wrong_password_is_refused_without_echoing_it(auth_redis: RedisServer) -> None:
    wrong = "not-the-Pa55word-zz9"
    client = create_redis(
        redis_settings_from_env({"REDIS_URL": f"redis://{ACL_USER}:{wrong}@127.0.0.1:{auth_redis.port}/0"})
    )
    try:
        with pytest.raises(AuthenticationError) as err:
            await client.ping()
    finally:
        await client.aclose()
    assert wrong not in str(err.value) and wrong not in repr(err.value)


async def test_no_password_is_refused(auth_redis: RedisServer) -> None:
    client = create_redis(redis_settings_from_env({"REDIS_URL": f"redis://127.0.0.1:{auth_redis.port}/0"}))
    try:
        with pytest.raises((AuthenticationError, ResponseError), match=r"(?i)auth"):
            await client.ping()
    finally:
        await client.aclose()


# ------------------------------------------------- every process, as the least-privilege ACL user


FORMS = ["url", "fields"]


def _process_env(form: str, server: RedisServer, workdir: Path) -> dict[str, str]:
    queues = write_queues_file(workdir / "queues.yaml", CONN_QUEUES)
    redis_env = _url_env(server) if form == "url" else _fields_env(server)
    return clean_env(ARQSCALE_QUEUES_FILE=str(queues), **redis_env)


def _require(command: str) -> None:
    if not command_exists(command):
        pytest.skip(f"`arqscale {command}` has not landed yet")


@pytest.mark.parametrize("form", FORMS)
async def test_worker_as_acl_user(form: str, auth_redis: RedisServer, admin: Redis, tmp_path: Path) -> None:
    _require("worker")
    output = await prove_worker(_process_env(form, auth_redis, tmp_path), tmp_path)
    assert ACL_PASSWORD not in output and "no permissions" not in output, output


@pytest.mark.parametrize("form", FORMS)
async def test_exporter_as_acl_user(form: str, auth_redis: RedisServer, admin: Redis, tmp_path: Path) -> None:
    _require("exporter")
    env = _process_env(form, auth_redis, tmp_path)
    await enqueue_idle(env, 2)
    output = prove_exporter(env, tmp_path, waiting=2)
    assert ACL_PASSWORD not in output and "no permissions" not in output, output


@pytest.mark.parametrize("form", FORMS)
async def test_api_as_acl_user(form: str, auth_redis: RedisServer, admin: Redis, tmp_path: Path) -> None:
    _require("api")
    output = prove_api(_process_env(form, auth_redis, tmp_path), tmp_path)
    assert ACL_PASSWORD not in output and "no permissions" not in output, output


@pytest.mark.parametrize("form", FORMS)
async def test_cli_as_acl_user(form: str, auth_redis: RedisServer, admin: Redis, tmp_path: Path) -> None:
    _require("status")
    _require("enqueue")
    _require("dlq")
    output = prove_cli(_process_env(form, auth_redis, tmp_path))
    assert ACL_PASSWORD not in output and "no permissions" not in output, output
