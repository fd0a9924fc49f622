"""``arqscale schedule ...`` as real subprocesses against the test redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
import yaml

QUEUES = {
    "q": {
        "functions": ["worker_tasks.record"],
        "schedules": {"nightly": {"cron": "0 3 * * *", "function": "record"}},
    }
}


@pytest.fixture
def env(redis_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    qfile = tmp_path / "queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": QUEUES}))
    return redis_env | {"ARQSCALE_QUEUES_FILE": str(qfile)}


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arqscale", "schedule", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_add_list_pause_resume_remove(env: dict[str, str], sync_redis: redis_sync.Redis) -> None:
    assert cli(env, "list", "q").stdout.strip() == "queue q has no schedules"
    added = cli(env, "add", "q", "report", "record", "--cron", "*/5 * * * *", "--timezone", "Europe/Berlin",
                "--args", "[1]", "--jitter", "2", "--missed", "run_once")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("schedule report of queue q created; next run 20")
    assert cli(env, "add", "q", "report", "record", "--every", "60").stdout.startswith(
        "schedule report of queue q replaced"
    )
    assert sync_redis.zscore("arqscale:q:schedules:next", "report") is not None

    table = cli(env, "list", "q").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "ORIGIN", "STATE", "TIMING"]
    assert table[1].split()[:5] == ["report", "api", "active", "every", "60s"]

    [line] = cli(env, "list", "q", "--json").stdout.splitlines()
    view = json.loads(line)
    assert view["name"] == "report" and view["schedule"]["every"] == 60 and view["last_job"] is None

    assert cli(env, "pause", "q", "report").stdout.strip() == "schedule report paused"
    assert cli(env, "pause", "q", "report").stdout.strip() == "schedule report was already paused"
    assert json.loads(cli(env, "show", "q", "report").stdout)["paused"] is True
    assert "paused" in cli(env, "list", "q").stdout
    assert cli(env, "resume", "q", "report").stdout.startswith("schedule report resumed; next run 20")
    assert cli(env, "resume", "q", "report").stdout.strip() == "schedule report was not paused"

    assert cli(env, "remove", "q", "report").stdout.strip() == "schedule report of queue q removed"
    assert not sync_redis.exists("arqscale:q:schedules")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["add", "q", "x", "nope", "--every", "5"], ["has no function 'nope'"]),
        (["add", "q", "x", "record", "--cron", "61 * * * *"], ["cron: Bad minute"]),
        (["add", "q", "x", "record", "--cron", "* * * * *", "--timezone", "Nowhere/City"], ["unknown time zone"]),
        (["add", "q", "x", "record", "--every", "5", "--args", "{}"], ["--args must be a JSON array"]),
        (["add", "q", "bad name", "record", "--every", "5"], ["name: String should match pattern"]),
        (["add", "q", "nightly", "record", "--every", "5"], ["declared in the queues file; change it there"]),
        (["remove", "q", "nightly"], ["declared in the queues file; remove it there"]),
        (["remove", "q", "x"], ["queue 'q' has no schedule 'x'"]),
        (["pause", "q", "x"], ["queue 'q' has no schedule 'x'"]),
        (["list", "nope"], ["unknown queue 'nope'"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    env: dict[str, str], sync_redis: redis_sync.Redis, args: list[str], fragments: list[str]
) -> None:
    result = cli(env, *args)
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert err.startswith("arqscale schedule: ") and "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
