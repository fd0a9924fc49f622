"""Real ``arqscale worker`` subprocesses: signals, kills, a blocked loop, a shared rate limit, Redis restarts."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis

from arqscale.core.keys import QueueKeys, error_key, in_progress_key, result_key
from arqscale.core.models import DeadJob, JobRequest
from arqscale.core.producer import Producer
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.worker.process import stop_signal_handler
from redis_server import RedisServer
from worker_processes import StartWorker, runs, stop_all, wait_until, worker_starter

TESTS = Path(__file__).resolve().parent.parent  # the shared helpers (worker_tasks, ...) live in tests/

BASE = {
    "functions": ["worker_tasks.sleep", "worker_tasks.block_loop", "worker_tasks.stamp", "worker_tasks.pause"],
    "lease_seconds": 1,
    "poll_interval": 0.1,
    "job_timeout": 10,
}


@pytest.fixture
def workers(redis_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    start, started = worker_starter(redis_env, tmp_path)
    yield start
    stop_all(started)


def spec_of(queues: dict[str, Any], name: str = "q") -> QueueSpec:
    return parse_queues({"queues": queues})[name]


def test_cli_help_and_unknown_queue(redis_env: dict[str, str]) -> None:
    helped = subprocess.run([sys.executable, "-m", "arqscale", "worker", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--queue" in helped.stdout and "--drain-timeout" in helped.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "arqscale", "worker", "--queue", "nope"], capture_output=True, text=True, env=redis_env
    )
    assert unknown.returncode == 2
    assert "queue 'nope' is not in the queues file" in unknown.stderr and "email" in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("worker_tasks.missing", "worker_tasks has no function 'missing'"),
        ("no_such_module.task", "cannot import no_such_module"),
        ("json.dumps", "json.dumps must be an `async def` function"),
    ],
)
def test_cli_refuses_functions_it_cannot_run(
    redis_env: dict[str, str], tmp_path: Path, function: str, message: str
) -> None:
    qfile = tmp_path / "queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": {"q": {"functions": [function]}}}))
    env = {**redis_env, "ARQSCALE_QUEUES_FILE": str(qfile), "PYTHONPATH": str(TESTS)}
    out = subprocess.run(
        [sys.executable, "-m", "arqscale", "worker", "--queue", "q"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("how", ["--port", "ARQSCALE_WORKER_PORT"])
def test_a_taken_port_that_was_chosen_stops_start_up_naming_both_settings(redis_env: dict[str, str], how: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        flag = ["--port", str(port)] if how == "--port" else []
        env = redis_env | ({"ARQSCALE_WORKER_PORT": str(port)} if how != "--port" else {})
        out = subprocess.run(
            [sys.executable, "-m", "arqscale", "worker", "--queue", "email", *flag],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
    assert out.returncode == 1
    assert f"cannot serve probes on 0.0.0.0:{port}" in out.stderr and "Traceback" not in out.stderr
    assert "--port or ARQSCALE_WORKER_PORT" in out.stderr


def _worker_without_port(env: dict[str, str], log: IO[str]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "arqscale", "worker", "--queue", "email"]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


async def test_two_workers_of_one_queue_on_one_machine_both_run_on_the_default_port_setting(
    redis: Redis, redis_env: dict[str, str], tmp_path: Path
) -> None:
    # As in two terminals: `arqscale worker --queue email` twice, no port given. The first takes 8080 if
    # it is free; the second (or both, when something else holds 8080) serves its probes on a free port.
    procs: list[subprocess.Popen[str]] = []
    logs = [(tmp_path / f"w{i}.log").open("w") for i in range(2)]
    try:
        ports = []
        for i, log in enumerate(logs):
            procs.append(_worker_without_port(redis_env, log))

            async def announced(i: int = i) -> int | None:
                assert procs[i].poll() is None, (tmp_path / f"w{i}.log").read_text()
                found = re.search(r"probes on :(\d+)", (tmp_path / f"w{i}.log").read_text())
                return int(found.group(1)) if found else None

            ports.append(await wait_until(announced, 30, f"worker {i} start-up"))
        assert ports[0] != ports[1]
        async with aiohttp.ClientSession() as http:
            for port in ports:

                async def ready(port: int = port) -> bool:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200

                await wait_until(ready, 15, f"/readyz on :{port}")
        assert all(p.poll() is None for p in procs)
        if ports[0] == 8080:
            assert "port 8080 is taken" in (tmp_path / "w1.log").read_text()
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        for log in logs:
            log.close()


async def test_sigterm_mid_job_lets_it_finish_and_exits_zero(redis: Redis, workers: Any) -> None:
    queues = {"q": BASE}
    w = await workers(queues).ready()
    await Producer(redis, {"q": spec_of(queues)}).enqueue("q", "sleep", 1.0, job_id="j")
    await wait_until(lambda: redis.exists(in_progress_key("j")), 5, "job started")
    w.proc.send_signal(signal.SIGTERM)
    await wait_until(lambda: _is(w.probe("/readyz"), 503), 1, "readyz 503 while draining")
    assert await w.exited(10) == 0
    assert await redis.lrange("finished", 0, -1) == [b"j"]
    assert await redis.exists(result_key("j"))
    assert await redis.zcard("arq:queue:q") == 0
    assert "drained and stopped" in w.output()


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_job_longer_than_drain_is_put_back_and_rerun_by_another_worker(redis: Redis, workers: Any) -> None:
    queues = {"q": BASE}
    first = await workers(queues, "q", "--drain-timeout", "0.3").ready()
    await Producer(redis, {"q": spec_of(queues)}).enqueue("q", "sleep", 2.0, job_id="long")
    await wait_until(lambda: redis.exists(in_progress_key("long")), 5, "job started")
    first.proc.send_signal(signal.SIGTERM)
    assert await first.exited(5) == 0
    assert await redis.zscore("arq:queue:q", "long") is not None  # back in the queue, not lost
    assert not await redis.exists(in_progress_key("long"))
    second = await workers(queues).ready()
    await wait_until(lambda: redis.exists(result_key("long")), 10, "rerun completed")
    first_run, second_run = await runs(redis, "long")
    assert first_run["pid"] == first.proc.pid and second_run["pid"] == second.proc.pid
    assert (first_run["try"], second_run["try"]) == (1, 1)  # the cut-short try did not count


async def test_sigkill_mid_job_reruns_on_another_worker_within_the_lease(redis: Redis, workers: Any) -> None:
    queues = {"q": BASE}
    pair = [workers(queues), workers(queues)]
    for w in pair:
        await w.ready()
    await Producer(redis, {"q": spec_of(queues)}).enqueue("q", "sleep", 1.5, job_id="k")
    first_run = (await wait_until(lambda: runs(redis, "k"), 5, "job started"))[0]
    victim, survivor = pair if pair[0].proc.pid == first_run["pid"] else pair[::-1]
    victim.proc.kill()
    killed_at = time.time()
    await wait_until(lambda: redis.exists(result_key("k")), 10, "rerun completed")
    first_run, second_run = await runs(redis, "k")
    assert first_run["try"] == 1
    assert second_run["pid"] == survivor.proc.pid and second_run["try"] == 2
    # Lease 1 s, renewed every 1/3 s: the job runs again within about one lease of the kill.
    assert second_run["at"] - killed_at < 1.0 + 0.5


async def test_blocked_loop_fails_liveness_and_the_job_ends_dead_with_the_reason(redis: Redis, workers: Any) -> None:
    queues = {"q": {**BASE, "max_tries": 1}}
    spec = spec_of(queues)
    first = await workers(queues).ready()
    assert await first.probe("/livez") == 200
    await Producer(redis, {"q": spec}).enqueue("q", "block_loop", 30, job_id="blocker")
    await wait_until(lambda: redis.exists("runs:blocker"), 5, "job started")
    await asyncio.sleep(0.3)
    assert await first.probe("/livez", answer_within=0.5) is None  # what the kubelet sees: no answer
    raw = await wait_until(lambda: redis.get(error_key("blocker")), 5, "watchdog report")
    assert "blocked the event loop" in json.loads(raw)["error"]
    first.proc.kill()  # what the kubelet does after failed liveness probes
    await workers(queues).ready()
    k = QueueKeys.for_queue("q", spec.queue_key)
    entry = DeadJob.model_validate_json(await wait_until(lambda: redis.hget(k.dlq, "blocker"), 10, "dead entry"))
    assert entry.error.startswith("tries exhausted: worker lost while running it")
    assert "blocked the event loop" in entry.error
    assert entry.attempts == 1 and entry.function == "block_loop" and entry.args == [30]


async def test_rate_limit_is_shared_by_two_worker_processes(redis: Redis, workers: Any) -> None:
    # Each worker alone could start 2 at a time (concurrency); together 4. The shared limit allows 3 a window.
    queues = {"q": {**BASE, "concurrency": 2, "rate_limit": {"max_jobs": 3, "interval": 1}}}
    a = workers(queues)
    b = workers(queues)
    await a.ready()
    await b.ready()
    await Producer(redis, {"q": spec_of(queues)}).enqueue_many(
        "q", [JobRequest(function="stamp", kwargs={"hold": 0.2}) for _ in range(12)]
    )
    await wait_until(lambda: _is(redis.llen("starts"), 12), 10, "all started")
    starts = sorted((json.loads(x) for x in await redis.lrange("starts", 0, -1)), key=lambda s: s["at"])
    # Rebuild the fixed windows from the recorded starts: a window opens at the first start after the last one
    # closed. Starts cluster at the opening of their window (a job starts a moment after its pickup), so
    # grouping starts less than half a window apart from the opening start tolerates a loaded machine.
    windows: list[list[dict[str, Any]]] = []
    for s in starts:
        if windows and s["at"] < windows[-1][0]["at"] + 0.5:
            windows[-1].append(s)
        else:
            windows.append([s])
    assert [len(w) for w in windows] == [3, 3, 3, 3]
    assert all(later[0]["at"] - earlier[0]["at"] > 0.9 for earlier, later in itertools.pairwise(windows))
    # The limit is shared: windows where both processes started jobs still hold 3, not 2 + 2.
    assert any({s["pid"] for s in w} == {a.proc.pid, b.proc.pid} for w in windows)


async def test_worker_survives_a_redis_restart_and_loses_nothing(
    tmp_path: Path, redis_env: dict[str, str], workers: Any
) -> None:
    own = RedisServer(tmp_path / "own-redis", aof=True).start()
    try:
        client = Redis.from_url(own.url)
        # Down for longer than the lease: the leases of the jobs running through the outage lapse, and the
        # worker takes them back when Redis returns (it is the only worker, so nobody else runs them).
        queues = {"q": {**BASE, "concurrency": 10, "lease_seconds": 1}}
        env = {"REDIS_URL": own.url, "ARQSCALE_REDIS_UNREACHABLE_SECONDS": "1"}
        w = await workers(queues, "q", env=env).ready()
        ran = tmp_path / "ran.txt"
        # Five jobs that run through the whole outage while five slots stay free for the short ones: when
        # Redis returns, the free slots' pickup must not start the long jobs again (their leases lapsed).
        jobs = [JobRequest(function="pause", args=[6.0, str(ran)], job_id=f"long{i}") for i in range(5)]
        jobs += [JobRequest(function="pause", args=[0.05, str(ran)], job_id=f"p{i}") for i in range(60)]
        count = len(jobs)
        await Producer(client, {"q": spec_of(queues)}).enqueue_many("q", jobs)

        async def long_ones_started() -> bool:
            return ran.exists() and {f"long{i}" for i in range(5)} <= set(ran.read_text().split())

        await wait_until(long_ones_started, 5, "the long jobs running")
        own.stop()
        await wait_until(lambda: _is(w.probe("/readyz"), 503), 2, "not ready while Redis is down")
        await wait_until(lambda: _is(w.probe("/livez"), 503), 3, "not live after the threshold")
        await asyncio.sleep(1.5)
        own.start()
        await client.aclose()
        client = Redis.from_url(own.url)
        await wait_until(lambda: _is(client.zcard("arqscale:q:completed"), count), 30, "every job completed")
        assert await w.probe("/livez") == 200 and await w.probe("/readyz") == 200
        assert w.proc.poll() is None  # no restart needed
        assert await client.zcard("arq:queue:q") == 0
        assert await client.hlen("arqscale:q:dlq") == 0
        assert await client.exists(*(result_key(j.job_id or "") for j in jobs)) == count
        # Each job ran once: the worker took its lapsed leases back instead of starting its jobs twice.
        assert sorted(ran.read_text().split()) == sorted(j.job_id or "" for j in jobs)
        await client.aclose()
    finally:
        own.kill()


def test_sigterms_arriving_together_are_one_stop_request() -> None:
    now = [100.0]
    calls: list[float] = []
    handler = stop_signal_handler(lambda: calls.append(now[0]), clock=lambda: now[0])
    handler(signal.SIGTERM)
    now[0] += 0.01
    handler(signal.SIGTERM)  # a parent-death signal again, from the dying parent's next thread
    assert calls == [100.0]
    now[0] += 2
    handler(signal.SIGTERM)  # later: a real second request (cut now)
    handler(signal.SIGINT)  # a second Ctrl-C always counts
    assert calls == [100.0, 102.01, 102.01]


async def test_a_burst_of_sigterms_drains_rather_than_cuts(redis: Redis, workers: Any) -> None:
    queues = {"q": BASE}
    w = await workers(queues).ready()
    await Producer(redis, {"q": spec_of(queues)}).enqueue("q", "sleep", 1.0, job_id="j")
    await wait_until(lambda: redis.exists(in_progress_key("j")), 5, "job started")
    for _ in range(4):
        w.proc.send_signal(signal.SIGTERM)
    assert await w.exited(10) == 0
    assert await redis.lrange("finished", 0, -1) == [b"j"]  # finished, not put back
    assert "second stop signal" not in w.output()
