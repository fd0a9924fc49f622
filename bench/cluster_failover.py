"""Redis Cluster primary failover, measured on loopback (docs/reliability.md, "Redis Cluster failover").

Per round: a fresh six-node cluster (three primaries with a replica each, ``cluster-node-timeout``
1000 ms; tests/cluster_servers.py), an ``arqscale api`` process pointed at it with
``REDIS_CLUSTER_NODES``, and three producers writing every 5 ms:

- ``py``: the Python ``Producer`` in this process, on the queue whose primary is killed (``busy``);
- ``http``: the API, on the same queue;
- ``py_other``: the Python ``Producer`` (its own client) on a queue served by another primary, which
  lives through it; ``http_other``: the API on that queue (the API has one client for every queue).

Then the busy queue's primary is SIGKILLed. Measured per round: when the harness sees the replica
promoted and every node agreeing (``promoted_s``), when each producer's first write sent after the kill
succeeded (``*_back_s``), how long the other shard's queue could not be written (``other_stall_s``:
the longest gap between two acknowledged writes, on its own client), the API's answers during the
switch (503s, 500s), and how many jobs acknowledged before the kill the new primary lacks (lost to
asynchronous replication).

    .venv/bin/python bench/cluster_failover.py [--rounds 3] [--json out.json]

Each round runs twice, with Redis' default ``cluster-require-full-coverage yes`` (every node refuses
commands while a slot has no primary) and with ``no``, in alternating order. Prints a table and a JSON
summary (per round, and the median of each figure per setting).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import aiohttp

from api_processes import api_process
from arqscale.core.connection import create_redis
from arqscale.core.producer import Producer
from arqscale.core.settings import RedisSettings
from arqscale.core.spec import parse_queues
from cluster_servers import RedisClusterSetup
from cluster_stack import process_env

INTERVAL = 0.005


@dataclass
class Writer:
    """One producer: what it sent, and when each acknowledged write was sent and answered."""

    tag: str
    queue: str
    acked: dict[str, tuple[float, float]] = field(default_factory=dict)  # job id -> (sent, acknowledged)
    statuses: dict[int, int] = field(default_factory=dict)  # HTTP only; 0: no answer
    errors: dict[str, int] = field(default_factory=dict)

    def back_after(self, killed: float) -> float:
        return min(done for sent, done in self.acked.values() if sent > killed) - killed

    def longest_gap(self, start: float, end: float) -> float:
        times = sorted(done for _, done in self.acked.values() if start <= done <= end)
        return max((b - a for a, b in itertools.pairwise(times)), default=end - start)


async def produce_py(writer: Writer, producer: Producer, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        job_id = f"{writer.tag}-{n}"
        sent = time.monotonic()
        try:
            await producer.enqueue(writer.queue, "noop", job_id=job_id)
            writer.acked[job_id] = (sent, time.monotonic())
        except Exception as exc:  # the outage itself: not acknowledged, so not owed
            writer.errors[type(exc).__name__] = writer.errors.get(type(exc).__name__, 0) + 1
        await asyncio.sleep(INTERVAL)


async def produce_http(writer: Writer, api: str, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        job_id = f"{writer.tag}-{n}"
        sent = time.monotonic()
        try:
            async with http.post(
                f"{api}/v1/queues/{writer.queue}/jobs", json={"function": "noop", "job_id": job_id}
            ) as r:
                writer.statuses[r.status] = writer.statuses.get(r.status, 0) + 1
                if r.status < 300:
                    writer.acked[job_id] = (sent, time.monotonic())
        except (aiohttp.ClientError, TimeoutError):
            writer.statuses[0] = writer.statuses.get(0, 0) + 1
        await asyncio.sleep(INTERVAL)


async def one_round(workdir: Path, *, full_coverage: bool) -> dict[str, Any]:
    setup = RedisClusterSetup(workdir / "cluster", require_full_coverage=full_coverage).start()
    try:
        busy, other = setup.names_on_distinct_primaries(2, prefix="b")
        queues = {q: {"functions": ["tasks.noop"]} for q in (busy, other)}
        env = process_env(setup, queues, workdir) | {"ARQSCALE_LOG_LEVEL": "WARNING"}
        settings = RedisSettings(cluster_nodes=setup.seeds)
        redis = create_redis(settings, socket_timeout=1, socket_connect_timeout=1)
        # The other shard's producer has its own client: its stall is the cluster's, not a shared client's.
        redis_other = create_redis(settings, socket_timeout=1, socket_connect_timeout=1)
        producer = Producer(redis, parse_queues({"queues": queues}))
        producer_other = Producer(redis_other, parse_queues({"queues": queues}))
        writers = {
            "py": Writer("py", busy),
            "http": Writer("http", busy),
            "py_other": Writer("py_other", other),
            "http_other": Writer("http_other", other),
        }
        stop = asyncio.Event()
        try:
            with api_process(env, workdir / "api.log") as api:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                    tasks = [
                        asyncio.create_task(produce_py(writers["py"], producer, stop)),
                        asyncio.create_task(produce_http(writers["http"], api, http, stop)),
                        asyncio.create_task(produce_py(writers["py_other"], producer_other, stop)),
                        asyncio.create_task(produce_http(writers["http_other"], api, http, stop)),
                    ]
                    try:
                        await asyncio.sleep(1.5)
                        old = setup.primary_for_key(busy)
                        killed = time.monotonic()
                        setup.kill(old)
                        await asyncio.to_thread(setup.wait_for_promotion, old, 60)
                        promoted = time.monotonic()
                        deadline = time.monotonic() + 60
                        while not all(any(s > killed for s, _ in w.acked.values()) for w in writers.values()):
                            assert time.monotonic() < deadline, {t: (w.statuses, w.errors) for t, w in writers.items()}
                            await asyncio.sleep(0.05)
                        await asyncio.sleep(0.5)
                    finally:
                        stop.set()
                        await asyncio.gather(*tasks)
            before = [j for w in (writers["py"], writers["http"]) for j, (sent, _) in w.acked.items() if sent <= killed]
            with setup.client() as check:
                present = sum(check.exists(f"arqscale:{{{busy}}}:job:{j}") for j in before)
            return {
                "full_coverage": full_coverage,
                "promoted_s": promoted - killed,
                "py_back_s": writers["py"].back_after(killed),
                "http_back_s": writers["http"].back_after(killed),
                "other_stall_s": writers["py_other"].longest_gap(killed - 1, promoted + 1),
                "http_other_stall_s": writers["http_other"].longest_gap(killed - 1, promoted + 1),
                "http_503": writers["http"].statuses.get(503, 0),
                "http_500": writers["http"].statuses.get(500, 0) + writers["http_other"].statuses.get(500, 0),
                "http_other_503": writers["http_other"].statuses.get(503, 0),
                "http_no_answer": writers["http"].statuses.get(0, 0),
                "py_errors": sum(writers["py"].errors.values()),
                "py_error_types": sorted(writers["py"].errors),
                "acknowledged_before_kill": len(before),
                "lost": len(before) - present,
            }
        finally:
            await redis.aclose()
            await redis_other.aclose()
    finally:
        setup.stop()


FIGURES = [
    "promoted_s",
    "py_back_s",
    "http_back_s",
    "other_stall_s",
    "http_other_stall_s",
    "http_503",
    "http_500",
    "http_other_503",
    "lost",
]


async def measure(rounds: int, workdir: Path | None) -> list[dict[str, Any]]:
    """Each round runs both settings of ``cluster-require-full-coverage``, in alternating order."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = workdir or Path(tmp)
        for n in range(rounds):
            for full in (True, False) if n % 2 == 0 else (False, True):
                rows.append(await one_round(base / f"round-{n}-{'full' if full else 'partial'}", full_coverage=full))
    return rows


def report(rows: list[dict[str, Any]], json_path: Path | None) -> None:
    print("cluster failover (SIGKILL of a primary, cluster-node-timeout 1000 ms, a write every 5 ms per producer):")
    print(
        f"{'full coverage':>13} {'promoted s':>10} {'py back s':>9} {'API back s':>10} {'other shard stall s':>19} "
        f"{'API other stall s':>17} {'API 503':>7} {'API other 503':>13} {'API 500':>7} {'acked before kill':>17} "
        f"{'lost':>4}"
    )
    for r in rows:
        print(
            f"{'yes' if r['full_coverage'] else 'no':>13} {r['promoted_s']:>10.2f} {r['py_back_s']:>9.2f} "
            f"{r['http_back_s']:>10.2f} {r['other_stall_s']:>19.2f} {r['http_other_stall_s']:>17.2f} "
            f"{r['http_503']:>7} {r['http_other_503']:>13} {r['http_500']:>7} "
            f"{r['acknowledged_before_kill']:>17} {r['lost']:>4}"
        )
    summary = {
        "rounds": rows,
        "median": {
            "yes" if full else "no": {
                k: statistics.median(r[k] for r in rows if r["full_coverage"] == full) for k in FIGURES
            }
            for full in (True, False)
        },
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if json_path:
        json_path.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--workdir", type=Path, help="keep the nodes' and the API's logs here (default: a temp dir)")
    args = parser.parse_args()
    report(asyncio.run(measure(args.rounds, args.workdir)), args.json)


if __name__ == "__main__":
    main()
