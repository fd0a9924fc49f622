"""``arqscale`` commands as real subprocesses against the test redis-server."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from arqscale.cli.main import COMMANDS, build_parser
from arqscale.core.spec import demo_queues
from protocol_steps import bury, pick_up

SPECS = demo_queues()  # the built-in demo queues: what the CLI uses without a queues file


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arqscale", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


def _bury_many(redis_url: str, queue: str, job_ids: list[str]) -> None:
    async def go() -> None:
        client = Redis.from_url(redis_url)
        try:
            for job_id in job_ids:
                await pick_up(client, SPECS[queue], job_id)
                await bury(client, SPECS[queue], job_id, error=f"ProviderError: {job_id} rejected\nsecond line")
        finally:
            await client.aclose()

    asyncio.run(go())


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(redis_env: dict[str, str], command: str) -> None:
    result = cli(redis_env, command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: arqscale {command}")


def _help_lines(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every help line of a parser and its subparsers, keyed by where it shows."""
    lines: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                lines[f"{parser.prog} {choice.dest}"] = choice.help or ""
            for sub in action.choices.values():
                lines.update(_help_lines(sub))
        elif action.help and action.help is not argparse.SUPPRESS:
            lines[f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"] = action.help
    return lines


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lines_read_alike(command: str) -> None:
    """argparse's own style: a lowercase start (acronyms aside) and no closing period, for subcommands and options."""
    lines = {where: text for where, text in _help_lines(build_parser(command)).items() if command in where}
    assert lines, command
    unlike = {w: text for w, text in lines.items() if not text or text.split()[0].istitle() or text.endswith(".")}
    assert unlike == {}


@pytest.mark.parametrize(
    ("command", "action"),
    [*(("dlq", a) for a in ("list", "show", "requeue", "purge")), ("queue", "pause"), ("queue", "resume")],
)
def test_subcommands_have_help(redis_env: dict[str, str], command: str, action: str) -> None:
    result = cli(redis_env, command, action, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: arqscale {command} {action}")


def test_enqueue_then_status(redis_env: dict[str, str], sync_redis: redis_sync.Redis) -> None:
    args = ["enqueue", "email", "send_email", "--args", '["ada@example.com"]', "--kwargs", '{"subject": "hi"}']
    first = cli(redis_env, *args, "--job-id", "welcome-1", "--priority", "0")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "enqueued welcome-1 on email (queued)"
    again = cli(redis_env, *args, "--job-id", "welcome-1")
    assert again.stdout.strip() == "welcome-1 already exists on email (queued): not enqueued again"
    deferred = cli(redis_env, "enqueue", "exports", "export_csv", "--defer", "60", "--json")
    body = json.loads(deferred.stdout)
    assert body["status"] == "deferred" and body["queue"] == "exports" and body["created"] is True

    job = cli(redis_env, "status", "welcome-1")
    assert job.returncode == 0
    assert "state      queued" in job.stdout and "function   send_email" in job.stdout
    assert "priority   0" in job.stdout
    as_json = json.loads(cli(redis_env, "status", "welcome-1", "--json").stdout)
    assert as_json["state"] == "queued" and as_json["queue"] == "email"
    missing = cli(redis_env, "status", "no-such-job")
    assert missing.returncode == 1 and "not_found" in missing.stdout


def test_status_table_and_json(redis_env: dict[str, str], sync_redis: redis_sync.Redis) -> None:
    for i in range(3):
        cli(redis_env, "enqueue", "email", "send_email", "--job-id", f"m{i}")
    cli(redis_env, "enqueue", "email", "send_email", "--defer", "300")
    table = cli(redis_env, "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "QUEUE", "WAITING", "ACTIVE", "DELAYED", "PAUSED", "COMPLETED", "FAILED", "BACKLOG", "OLDEST", "WORKERS",
        "STATE",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(SPECS)
    assert rows["email"][1:4] == ["3", "0", "1"] and rows["email"][-1] == "running"
    data = json.loads(cli(redis_env, "status", "--json").stdout)
    email = next(q for q in data["queues"] if q["queue"] == "email")
    assert (email["waiting"], email["delayed"], email["backlog"], email["workers"]) == (3, 1, 3, 0)


def test_queue_pause_resume(redis_env: dict[str, str], sync_redis: redis_sync.Redis) -> None:
    assert cli(redis_env, "queue", "pause", "email").stdout.strip() == "queue email paused"
    assert cli(redis_env, "queue", "pause", "email").stdout.strip() == "queue email was already paused"
    assert sync_redis.exists("arqscale:email:paused")
    status = cli(redis_env, "status").stdout
    assert next(line for line in status.splitlines() if line.startswith("email")).endswith("paused")
    assert cli(redis_env, "queue", "resume", "email").stdout.strip() == "queue email resumed"
    assert not sync_redis.exists("arqscale:email:paused")
    _one_line_error(cli(redis_env, "queue", "pause", "nope"), 2, "unknown queue 'nope'", "email")


def test_dlq_list_show_requeue_purge(redis_env: dict[str, str], sync_redis: redis_sync.Redis, redis_url: str) -> None:
    for i in range(4):
        cli(redis_env, "enqueue", "verification", "verify_document", "--args", f'[{{"doc": {i}}}]', "--job-id", f"v{i}")
    _bury_many(redis_url, "verification", ["v0", "v1", "v2", "v3"])

    listing = cli(redis_env, "dlq", "list", "verification")
    assert listing.returncode == 0
    assert len([line for line in listing.stdout.splitlines() if line.startswith("verification  v")]) == 4
    assert "# verification: 4 dead-letter entries, 4 shown" in listing.stdout
    everywhere = cli(redis_env, "dlq", "list", "--json", "--limit", "2")
    assert len(everywhere.stdout.splitlines()) == 2
    assert all("payload_b64" not in json.loads(line) for line in everywhere.stdout.splitlines())

    shown = cli(redis_env, "dlq", "show", "verification", "v1")
    assert shown.returncode == 0
    assert 'args       [{"doc": 1}]' in shown.stdout and "traceback" in shown.stdout
    _one_line_error(cli(redis_env, "dlq", "show", "verification", "zz"), 1, "no dead-letter entry 'zz'")

    requeued = cli(redis_env, "dlq", "requeue", "verification", "v1", "nope")
    assert requeued.returncode == 1  # one of the two was skipped
    assert "requeued v1 on verification" in requeued.stdout and "skipped nope: no such entry" in requeued.stdout
    assert sync_redis.zscore("arq:queue:verification", "v1") is not None
    assert json.loads(cli(redis_env, "status", "v1", "--json").stdout)["state"] == "queued"

    purged = cli(redis_env, "dlq", "purge", "verification", "v2")
    assert purged.returncode == 0 and purged.stdout.strip() == "purged 1 dead-letter entry from verification"
    assert "purged 0" in cli(redis_env, "dlq", "purge", "verification", "--older-than", "3600").stdout
    requeue_all = cli(redis_env, "dlq", "requeue", "verification", "--all").stdout.splitlines()
    assert sorted(requeue_all) == ["requeued v0 on verification", "requeued v3 on verification"]
    _bury_many(redis_url, "verification", ["v0", "v3"])
    assert cli(redis_env, "dlq", "purge", "verification", "--all").stdout.strip() == (
        "purged 2 dead-letter entries from verification"
    )
    assert "0 dead-letter entries" in cli(redis_env, "dlq", "list", "verification").stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["enqueue", "nope", "send_email"], ["unknown queue 'nope'", "known queues: email, exports"]),
        (["enqueue", "email", "resize_image"], ["has no function 'resize_image'", "send_email"]),
        (["enqueue", "email", "send_email", "--args", "{"], ["--args is not valid JSON"]),
        (["enqueue", "email", "send_email", "--args", '{"a": 1}'], ["--args must be a JSON array"]),
        (["enqueue", "email", "send_email", "--kwargs", "[1]"], ["--kwargs must be a JSON object"]),
        (["enqueue", "email", "send_email", "--priority", "9"], ["priority 9 is out of range", "0 (most urgent) to 2"]),
        (["enqueue", "email", "send_email", "--defer", "-1"], ["--defer", "greater than or equal to 0"]),
        (["enqueue", "email", "send_email", "--job-id", "bad id"], ["--job-id", "pattern"]),
        (["dlq", "requeue", "email"], ["give one or more job ids, or --all"]),
        (["dlq", "purge", "email", "x", "--all"], ["not both"]),
        (["dlq", "list", "--limit", "0"], ["--limit must be at least 1"]),
        (["dlq", "show", "nope", "x"], ["unknown queue 'nope'"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(redis_env: dict[str, str], args: list[str], fragments: list[str]) -> None:
    _one_line_error(cli(redis_env, *args), 2, *fragments)


def test_argparse_errors_exit_2(redis_env: dict[str, str]) -> None:
    result = cli(redis_env, "enqueue", "email")
    assert result.returncode == 2 and "required: FUNCTION" in result.stderr
    assert cli(redis_env, "enqueue", "email", "send_email", "--priority", "high").returncode == 2
    assert cli(redis_env, "queue", "stop", "email").returncode == 2


def test_status_lists_bullmq_queues_too(
    redis_env: dict[str, str], sync_redis: redis_sync.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "queues.yaml"
    path.write_text("queues:\n  email:\n    functions: [a.b.send_email]\n  node-scans:\n    backend: bullmq\n")
    sync_redis.rpush("bull:node-scans:wait", "1", "2")
    env = redis_env | {"ARQSCALE_QUEUES_FILE": str(path)}
    rows = [line.split() for line in cli(env, "status").stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["email", "node-scans"]
    assert rows[1][1] == "2"  # waiting, from BullMQ's wait list
    # BullMQ queues are counted, not run: the arq-only commands refuse them by name.
    _one_line_error(cli(env, "enqueue", "node-scans", "scan"), 2, "unknown queue 'node-scans'", "known queues: email")


def test_status_lists_a_queues_jobs_by_state(redis_env: dict[str, str], sync_redis: redis_sync.Redis) -> None:
    for i in range(3):
        cli(redis_env, "enqueue", "email", "send_email", "--job-id", f"m{i}")
    cli(redis_env, "enqueue", "email", "send_email", "--job-id", "m-urgent", "--priority", "0")
    cli(redis_env, "enqueue", "email", "send_email", "--job-id", "m-later", "--defer", "300")
    waiting = cli(redis_env, "status", "email", "--state", "waiting", "--limit", "2")
    assert waiting.returncode == 0, waiting.stderr
    lines = waiting.stdout.splitlines()
    assert lines[0].split()[:4] == ["JOB", "FUNCTION", "PRIORITY", "ATTEMPTS"]
    assert [line.split()[0] for line in lines[1:-1]] == ["m-urgent", "m0"]
    assert lines[-1] == "# email: 4 waiting, 1-2 shown"
    delayed = json.loads(cli(redis_env, "status", "email", "--state", "delayed", "--json").stdout)
    assert (delayed["total"], [j["job_id"] for j in delayed["items"]]) == (1, ["m-later"])
    empty = cli(redis_env, "status", "email", "--state", "failed")
    assert empty.stdout.strip() == "# email: 0 failed, none shown"
    _one_line_error(cli(redis_env, "status", "email", "--state", "waiting", "--limit", "500"), 2, "1 to 200")
    _one_line_error(cli(redis_env, "status", "nope", "--state", "waiting"), 2, "unknown queue 'nope'")
    _one_line_error(cli(redis_env, "status", "--state", "waiting"), 2, "needs a queue")
