"""A bad queues file or bad Redis settings stop start-up with one clear line, and never show a password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from redis_server import RedisServer, free_port

PASSWORD = "hunter2-Sup3r-secret"


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arqscale", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


BAD_FILES = [
    ("queues:\n  email:\n    functions: [myapp.tasks.send_email]\n    concurrency: 0\n", ["'email'", "concurrency"]),
    ("queues:\n  email:\n    functions: [myapp.tasks.send_email]\n    concurency: 5\n", ["'email'", "concurency"]),
    ("queues:\n  exports:\n    functions: []\n", ["'exports'", "functions"]),
    ("queues:\n  email:\n    functions: [not a path]\n", ["'email'", "functions.0"]),
    (
        "queues:\n  verification:\n    functions: [a.b]\n    backoff: {strategy: linear}\n",
        ["'verification'", "backoff.strategy"],
    ),
    ("queues:\n  email:\n    functions: [a.b]\n    rate_limit: {max_jobs: -1}\n", ["'email'", "rate_limit.max_jobs"]),
    ("queues: [email]\n", ["non-empty `queues:` map"]),
    ("queues:\n  email: {functions: [a.b]\n", ["not valid YAML: line 3, column 1: expected ',' or '}'"]),
]


def _assert_stops(env: dict[str, str], path: Path, command: list[str], fragments: list[str]) -> None:
    result = cli(env | {"ARQSCALE_QUEUES_FILE": str(path)}, *command)
    assert result.returncode == 2, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert str(path) in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(("text", "fragments"), BAD_FILES)
def test_invalid_queues_file_stops_start_up_naming_queue_and_field(
    redis_env: dict[str, str], tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = tmp_path / "queues.yaml"
    path.write_text(text)
    _assert_stops(redis_env, path, ["status"], fragments)


@pytest.mark.parametrize(
    "command", [["api"], ["enqueue", "email", "f"], ["worker", "--queue", "email"], ["dlq", "list"]]
)
def test_every_process_checks_the_queues_file(redis_env: dict[str, str], tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "queues.yaml"
    text, fragments = BAD_FILES[0]
    path.write_text(text)
    _assert_stops(redis_env, path, command, fragments)


def test_missing_queues_file_is_named(redis_env: dict[str, str], tmp_path: Path) -> None:
    result = cli(redis_env | {"ARQSCALE_QUEUES_FILE": str(tmp_path / "nope.yaml")}, "status")
    assert result.returncode == 2 and "nope.yaml: cannot read queues file" in result.stderr


def _assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    assert PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("env_vars", "code", "fragment"),
    [
        ({"REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"}, 1, "cannot reach Redis at redis://:***@"),
        ({"REDIS_URL": f"redis://app:{PASSWORD}@127.0.0.1:notaport/0"}, 2, "REDIS_URL has a port that is not a number"),
        ({"REDIS_URL": f"http://:{PASSWORD}@127.0.0.1:1/0"}, 2, "REDIS_URL must start with redis://, rediss://"),
        ({"REDIS_PASSWORD": PASSWORD, "REDIS_PORT": "not-a-port"}, 2, "port: Input should be a valid integer"),
        ({"REDIS_PASSWORD": PASSWORD, "REDIS_PORT": str(free_port())}, 1, "cannot reach Redis at redis://:***@"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["dlq", "list"], ["enqueue", "email", "send_email"]])
def test_failing_start_up_never_shows_the_password(
    redis_env: dict[str, str], env_vars: dict[str, str], code: int, fragment: str, command: list[str]
) -> None:
    env = {k: v for k, v in redis_env.items() if k != "REDIS_URL"} | env_vars
    result = cli(env, *command)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert fragment in result.stderr, result.stderr
    _assert_no_secret(result)


def test_api_start_up_with_a_bad_url_never_shows_the_password(redis_env: dict[str, str]) -> None:
    env = redis_env | {"REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:notaport/0"}
    result = cli(env, "api", "--port", str(free_port()))
    assert result.returncode == 2
    assert "REDIS_URL has a port that is not a number" in result.stderr
    _assert_no_secret(result)


def test_wrong_password_against_a_real_protected_redis(tmp_path: Path, redis_env: dict[str, str]) -> None:
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    try:
        base = {k: v for k, v in redis_env.items() if k != "REDIS_URL"}
        wrong = cli(base | {"REDIS_URL": f"redis://:not-{PASSWORD}@127.0.0.1:{server.port}/0"}, "status")
        assert wrong.returncode == 1
        assert "redis://:***@127.0.0.1" in wrong.stderr
        _assert_no_secret(wrong)
        assert f"not-{PASSWORD}" not in wrong.stderr
        right = cli(
            base | {"REDIS_PASSWORD": PASSWORD, "REDIS_PORT": str(server.port), "REDIS_HOST": "127.0.0.1"}, "status"
        )
        assert right.returncode == 0, right.stderr
        assert right.stdout.startswith("QUEUE")
        _assert_no_secret(right)
    finally:
        server.kill()
