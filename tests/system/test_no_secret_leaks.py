"""Secrets never reach logs, reprs or error messages, even when start-up goes wrong.

Every process (``worker``, ``api``, ``exporter``, ``webhooks``, ``status``) is started with DEBUG logging and a
distinctive Redis password (and API token) in a configuration that cannot work: Redis unreachable,
a wrong password against a real server, an invalid queues file, an invalid environment variable.
Everything it prints is grepped: the secrets never appear, and the output names what is wrong.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arqscale.core.config import load_config
from arqscale.core.settings import ArqscaleSettings, RedisSettings
from chaos_tasks import (
    CONN_QUEUES,
    ArqscaleProcess,
    clean_env,
    command_exists,
    free_port,
    http_get,
    write_queues_file,
)
from redis_server import RedisServer

SECRET = "Zq7-leak-canary-PASSWORD-4711"
TOKEN = "api-token-canary-Xy42-secret"
ENCODED_SECRET = SECRET.replace("-", "%2D")  # in case anything prints the URL-encoded form

LONG_RUNNING = ["worker", "api", "exporter", "webhooks"]
PORT_VARIABLE = {
    "worker": "ARQSCALE_WORKER_PORT",
    "api": "ARQSCALE_API_PORT",
    "exporter": "ARQSCALE_EXPORTER_PORT",
    "webhooks": "ARQSCALE_WEBHOOKS_PORT",
}
PROBED_PATHS = {
    "worker": ["/livez", "/readyz", "/metrics"],
    "api": ["/healthz", "/readyz", "/v1/queues"],
    "exporter": ["/readyz", "/metrics", "/keda/v1/queues/conn"],
    "webhooks": ["/readyz", "/metrics"],
}
COMMANDS = [*LONG_RUNNING, "status"]


@pytest.fixture(scope="module")
def real_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-leaks"), password="the-right-password").start()
    yield server
    server.kill()


def _args(command: str) -> list[str]:
    return {"worker": ["worker", "--queue", "conn"], "status": ["status", "--json"]}.get(command, [command])


def _ports() -> dict[str, str]:
    return {
        "ARQSCALE_WORKER_PORT": str(free_port()),
        "ARQSCALE_API_PORT": str(free_port()),
        "ARQSCALE_EXPORTER_PORT": str(free_port()),
        "ARQSCALE_METRICS_API_PORT": str(free_port()),
        "ARQSCALE_WEBHOOKS_PORT": str(free_port()),
    }


def _run(command: str, env: dict[str, str], workdir: Path, expect: list[str], within: float = 15) -> str:
    """Run ``arqscale <command>`` until its output shows every ``expect`` word (or it exits); return it."""
    env = {**env, **_ports(), "ARQSCALE_LOG_LEVEL": "DEBUG", "ARQSCALE_API_TOKEN": TOKEN}
    if command not in LONG_RUNNING:
        done = subprocess.run(
            [sys.executable, "-m", "arqscale", *_args(command)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0, f"`arqscale {command}` succeeded with a broken configuration"
        return done.stdout + done.stderr
    port = int(env[PORT_VARIABLE[command]])
    proc = ArqscaleProcess(_args(command), env, workdir / f"{command}-{time.monotonic_ns()}.log", port)
    answers = ""
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and proc.alive():
            # What the process answers over HTTP counts as output too (the API reports Redis in /healthz).
            answers = "".join(
                f"\nGET {path}: {status} {body}"
                for path in PROBED_PATHS[command]
                for status, body in [http_get(proc.url(path), headers={"Authorization": f"Bearer {TOKEN}"})]
            )
            text = (proc.output() + answers).lower()
            if all(word.lower() in text for word in expect):
                break
            time.sleep(0.3)
        proc.stop(10)
        return proc.output() + answers
    finally:
        proc.close()


def _assert_clean(output: str) -> None:
    for secret in (SECRET, ENCODED_SECRET, TOKEN):
        assert secret not in output, f"secret {secret[:8]}... leaked:\n{output[-4000:]}"


def _require(command: str) -> None:
    if not command_exists(command):
        pytest.skip(f"`arqscale {command}` has not landed yet")


@pytest.fixture
def queues(tmp_path: Path) -> Path:
    return write_queues_file(tmp_path / "queues.yaml", CONN_QUEUES)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("form", ["url", "fields", "sentinel"])
def test_unreachable_redis(command: str, form: str, queues: Path, tmp_path: Path) -> None:
    _require(command)
    port = free_port()  # nothing listens there
    redis_env = {
        "url": {"REDIS_URL": f"redis://app:{SECRET}@127.0.0.1:{port}/0"},
        "fields": {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(port),
            "REDIS_USERNAME": "app",
            "REDIS_PASSWORD": SECRET,
        },
        # Both passwords: the data nodes' and the sentinels' own.
        "sentinel": {
            "REDIS_SENTINELS": f"127.0.0.1:{port}",
            "REDIS_PASSWORD": SECRET,
            "REDIS_SENTINEL_PASSWORD": SECRET,
        },
    }[form]
    env = clean_env(ARQSCALE_QUEUES_FILE=str(queues), **redis_env)
    output = _run(command, env, tmp_path, expect=[f"127.0.0.1:{port}"])
    _assert_clean(output)
    # The output says where it tried and that nothing answered there.
    assert f"127.0.0.1:{port}" in output, output[-3000:]
    reasons = ("refused", "unreachable", "cannot reach", "connect call failed", "does not answer", "unavailable")
    assert any(w in output.lower() for w in reasons), output


@pytest.mark.parametrize("command", COMMANDS)
def test_wrong_password(command: str, real_redis: RedisServer, queues: Path, tmp_path: Path) -> None:
    _require(command)
    env = clean_env(
        ARQSCALE_QUEUES_FILE=str(queues), REDIS_URL=f"redis://default:{SECRET}@127.0.0.1:{real_redis.port}/0"
    )
    output = _run(command, env, tmp_path, expect=["password"])
    _assert_clean(output)
    assert any(w in output.lower() for w in ("invalid username-password", "wrongpass", "authentication")), output


@pytest.mark.parametrize("command", COMMANDS)
def test_broken_queues_file(command: str, tmp_path: Path) -> None:
    _require(command)
    broken = write_queues_file(
        tmp_path / "broken.yaml",
        {"conn": {"functions": ["chaos_tasks.echo"], "concurrency": -3}},
    )
    env = clean_env(ARQSCALE_QUEUES_FILE=str(broken), REDIS_URL=f"redis://app:{SECRET}@127.0.0.1:1/0")
    output = _run(command, env, tmp_path, expect=["concurrency"])
    _assert_clean(output)
    assert "'conn'" in output and "concurrency" in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("command", COMMANDS)
def test_unreadable_queues_file_and_bad_port(command: str, tmp_path: Path) -> None:
    _require(command)
    env = clean_env(
        ARQSCALE_QUEUES_FILE=str(tmp_path / "missing.yaml"),
        REDIS_PASSWORD=SECRET,
        REDIS_PORT="not-a-port",
    )
    output = _run(command, env, tmp_path, expect=["port"])
    _assert_clean(output)
    assert "port" in output.lower(), output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_queues_file(command: str, tmp_path: Path) -> None:
    _require(command)
    missing = tmp_path / "missing.yaml"
    env = clean_env(ARQSCALE_QUEUES_FILE=str(missing), REDIS_URL=f"redis://app:{SECRET}@127.0.0.1:1/0")
    output = _run(command, env, tmp_path, expect=["missing.yaml"])
    _assert_clean(output)
    assert str(missing) in output, output


def test_json_logs_of_a_worker_that_cannot_reach_redis(queues: Path, tmp_path: Path) -> None:
    _require("worker")
    port = free_port()
    env = clean_env(
        ARQSCALE_QUEUES_FILE=str(queues),
        ARQSCALE_LOG_FORMAT="json",
        REDIS_URL=f"redis://app:{SECRET}@127.0.0.1:{port}/0",
    )
    output = _run("worker", env, tmp_path, expect=["unreachable"])
    _assert_clean(output)


# ------------------------------------------------------------------------------------ reprs


def test_settings_reprs_hide_secrets(monkeypatch: pytest.MonkeyPatch, queues: Path) -> None:
    for name in ("REDIS_URL", "REDIS_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("REDIS_USERNAME", "app")
    monkeypatch.setenv("ARQSCALE_API_TOKEN", TOKEN)
    monkeypatch.setenv("ARQSCALE_QUEUES_FILE", str(queues))
    redis, settings = RedisSettings(), ArqscaleSettings()
    config = load_config()
    for text in (
        repr(redis),
        str(redis),
        repr(settings),
        str(settings),
        repr(config),
        redis.model_dump_json(),
        settings.model_dump_json(),
        redis.display_url(),
        str(redis.model_dump()),
    ):
        _assert_clean(text)
    assert redis.display_url() == "redis://app:***@localhost:6379/0"


def test_url_settings_repr_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"rediss://app:{SECRET}@redis.internal:6380/3")
    redis = RedisSettings()
    for text in (repr(redis), str(redis), redis.model_dump_json(), redis.display_url()):
        _assert_clean(text)
    assert redis.display_url() == "rediss://app:***@redis.internal:6380/3"


def test_invalid_settings_error_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from arqscale.core.config import ConfigError

    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("REDIS_PORT", "70000")
    monkeypatch.setenv("REDIS_DB", SECRET)
    with pytest.raises(ConfigError) as err:
        load_config()
    _assert_clean(str(err.value))
    assert "port" in str(err.value) and "db" in str(err.value)


# ------------------------------------------------------------ the API's unauthenticated paths


def test_unauthenticated_health_tells_nothing_about_queues(
    real_redis: RedisServer, queues: Path, tmp_path: Path
) -> None:
    """With a bearer token set, the paths the kubelet probes without one must not list queues or counts."""
    _require("api")
    port = free_port()
    env = clean_env(
        ARQSCALE_QUEUES_FILE=str(queues),
        REDIS_URL=f"redis://:the-right-password@127.0.0.1:{real_redis.port}/0",
        ARQSCALE_API_TOKEN=TOKEN,
        ARQSCALE_API_PORT=str(port),
    )
    api = ArqscaleProcess(["api"], env, tmp_path / "api.log", port)
    try:
        api.wait_http("/livez")
        for path in ("/healthz", "/livez", "/readyz"):
            status, body = http_get(api.url(path))
            assert status == 200, (path, status, body)
            for queue in CONN_QUEUES:
                assert f'"{queue}"' not in body, f"{path} names queue {queue!r} without a token: {body[:300]}"
        status, body = http_get(api.url("/healthz"), headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and '"idle"' in body  # with the token, the full report
    finally:
        api.close()
