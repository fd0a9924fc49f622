"""Redis over TLS (``rediss://``), with a CA file and client certificates, against a real redis-server.

Two servers: one TLS-only (``--port 0 --tls-port N``) that accepts any client, and one that also
demands a client certificate (``--tls-auth-clients yes``), a password and an ACL user. Every process
(worker, exporter, API, CLI) is proven through both ways of configuring Redis: ``REDIS_URL`` and the
``REDIS_HOST``/``REDIS_PORT``/``REDIS_USERNAME``/``REDIS_PASSWORD``/``REDIS_TLS*`` variables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from arqscale.core.connection import client_kwargs, create_redis
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
from tls_material import TlsFiles, TlsRedisServer, make_tls_files, make_untrusted_ca

PASSWORD = "tls-Default-Pa55"  # the default user's password (requirepass)
ACL_USER, ACL_PASSWORD = "arqscale-app", "tls-Acl-Pa55-xyz"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("redis-tls"), tls_files).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def mtls_redis(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[TlsRedisServer]:
    """Client certificates required, a password on the default user and an ACL user."""
    acl = ["--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all"]
    server = TlsRedisServer(
        tmp_path_factory.mktemp("redis-mtls"), tls_files, client_certs=True, password=PASSWORD, extra_args=acl
    ).start()
    yield server
    server.kill()


def _url_env(server: TlsRedisServer, files: TlsFiles, *, client_cert: bool = True) -> dict[str, str]:
    env = {
        "REDIS_URL": f"rediss://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{server.port}/0",
        "REDIS_TLS_CA_FILE": str(files.ca_cert),
    }
    if client_cert:
        env |= {"REDIS_TLS_CERT_FILE": str(files.client_cert), "REDIS_TLS_KEY_FILE": str(files.client_key)}
    return env


def _fields_env(server: TlsRedisServer, files: TlsFiles) -> dict[str, str]:
    return {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(server.port),
        "REDIS_USERNAME": ACL_USER,
        "REDIS_PASSWORD": ACL_PASSWORD,
        "REDIS_TLS": "true",
        "REDIS_TLS_CA_FILE": str(files.ca_cert),
        "REDIS_TLS_CERT_FILE": str(files.client_cert),
        "REDIS_TLS_KEY_FILE": str(files.client_key),
    }


async def _whoami(env: dict[str, str]) -> str:
    client: Redis = create_redis(redis_settings_from_env(env))
    try:
        assert await client.ping()
        who = await client.acl_whoami()
        return who.decode() if isinstance(who, bytes) else str(who)
    finally:
        await client.aclose()


# ------------------------------------------------------------------ the client: create_redis


async def test_rediss_url_with_a_ca_file(tls_redis: TlsRedisServer, tls_files: TlsFiles) -> None:
    env = {"REDIS_URL": f"rediss://127.0.0.1:{tls_redis.port}/0", "REDIS_TLS_CA_FILE": str(tls_files.ca_cert)}
    assert await _whoami(env) == "default"


async def test_host_port_and_redis_tls(tls_redis: TlsRedisServer, tls_files: TlsFiles) -> None:
    env = {
        "REDIS_HOST": "localhost",  # the certificate names localhost and 127.0.0.1: hostnames are checked
        "REDIS_PORT": str(tls_redis.port),
        "REDIS_TLS": "true",
        "REDIS_TLS_CA_FILE": str(tls_files.ca_cert),
    }
    assert await _whoami(env) == "default"


@pytest.mark.parametrize("form", ["url", "fields"])
async def test_client_certificate_acl_user_and_password(
    form: str, mtls_redis: TlsRedisServer, tls_files: TlsFiles
) -> None:
    env = _url_env(mtls_redis, tls_files) if form == "url" else _fields_env(mtls_redis, tls_files)
    assert await _whoami(env) == ACL_USER


async def test_no_client_certificate_is_refused(mtls_redis: TlsRedisServer, tls_files: TlsFiles) -> None:
    env = _url_env(mtls_redis, tls_files, client_cert=False)
    client = create_redis(redis_settings_from_env(env))
    try:
        with pytest.raises(RedisConnectionError) as err:
            await client.ping()
    finally:
        await client.aclose()
    assert ACL_PASSWORD not in str(err.value)


async def test_an_untrusted_server_is_refused(tls_redis: TlsRedisServer, tmp_path: Path) -> None:
    env = {"REDIS_URL": f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0"}
    env["REDIS_TLS_CA_FILE"] = str(make_untrusted_ca(tmp_path / "other"))
    client = create_redis(redis_settings_from_env(env))
    try:
        with pytest.raises(RedisConnectionError) as err:
            await client.ping()
    finally:
        await client.aclose()
    assert "certificate verify failed" in str(err.value)
    assert PASSWORD not in str(err.value)


async def test_plain_redis_url_cannot_talk_to_a_tls_port(tls_redis: TlsRedisServer) -> None:
    client = create_redis(redis_settings_from_env({"REDIS_URL": f"redis://127.0.0.1:{tls_redis.port}/0"}))
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()


# ------------------------------------------------------------------- every process, through TLS


def _process_env(form: str, server: TlsRedisServer, files: TlsFiles, workdir: Path) -> dict[str, str]:
    queues = write_queues_file(workdir / "queues.yaml", CONN_QUEUES)
    redis_env = _url_env(server, files) if form == "url" else _fields_env(server, files)
    return clean_env(ARQSCALE_QUEUES_FILE=str(queues), **redis_env)


def _require(command: str) -> None:
    if not command_exists(command):
        pytest.skip(f"`arqscale {command}` has not landed yet")


FORMS = ["url", "fields"]


@pytest.mark.parametrize("form", FORMS)
async def test_worker_runs_jobs_over_tls(
    form: str, mtls_redis: TlsRedisServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    _require("worker")
    output = await prove_worker(_process_env(form, mtls_redis, tls_files, tmp_path), tmp_path)
    assert ACL_PASSWORD not in output


@pytest.mark.parametrize("form", FORMS)
async def test_exporter_counts_over_tls(
    form: str, mtls_redis: TlsRedisServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    _require("exporter")
    env = _process_env(form, mtls_redis, tls_files, tmp_path)
    admin = Redis(
        port=mtls_redis.port,
        password=PASSWORD,
        ssl=True,
        ssl_ca_certs=str(tls_files.ca_cert),
        ssl_certfile=str(tls_files.client_cert),
        ssl_keyfile=str(tls_files.client_key),
    )
    await admin.flushall()
    await admin.aclose()
    await enqueue_idle(env, 3)
    output = prove_exporter(env, tmp_path, waiting=3)
    assert ACL_PASSWORD not in output


@pytest.mark.parametrize("form", FORMS)
def test_api_over_tls(form: str, mtls_redis: TlsRedisServer, tls_files: TlsFiles, tmp_path: Path) -> None:
    _require("api")
    output = prove_api(_process_env(form, mtls_redis, tls_files, tmp_path), tmp_path)
    assert ACL_PASSWORD not in output


@pytest.mark.parametrize("form", FORMS)
def test_cli_over_tls(form: str, mtls_redis: TlsRedisServer, tls_files: TlsFiles, tmp_path: Path) -> None:
    _require("status")
    _require("enqueue")
    _require("dlq")
    output = prove_cli(_process_env(form, mtls_redis, tls_files, tmp_path))
    assert ACL_PASSWORD not in output


def test_the_sync_client_speaks_tls_too(mtls_redis: TlsRedisServer, tls_files: TlsFiles) -> None:
    """The worker's loop watchdog reports from a thread with a sync client built from ``client_kwargs``."""
    settings = redis_settings_from_env(_fields_env(mtls_redis, tls_files))
    client = sync_redis.Redis.from_url(settings.connection_url(), **(client_kwargs(settings) | {"socket_timeout": 5}))
    try:
        assert client.acl_whoami() in (ACL_USER, ACL_USER.encode())
    finally:
        client.close()
