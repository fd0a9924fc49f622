"""Exporter latency and refresh cost: ``/metrics``, the External Metrics API and KEDA with 10 to 1,000 queues.

    python bench/exporter_latency.py                  # ~2 minutes: 10, 100, 1,000 queues; prints the tables
    python bench/exporter_latency.py --write-docs     # also rewrites the results block of docs/benchmarks-exporter.md
    python bench/exporter_latency.py --queues 1000 --jobs 200000 --requests 1000 --baseline 0f238ea --json out.json

For each queue count it starts a private ``redis-server`` on a free loopback port, fills it with
``--jobs`` jobs spread evenly over the queues (90 % waiting, 5 % delayed, 2 % running with a live lease,
3 % completed) with one Lua script per chunk, plus each queue's totals hash (the counters the worker
scripts keep), then, for each version (this checkout, and ``--baseline COMMIT``'s ``src/`` read from git),
in turn and in rotating order for ``--repeat`` rounds:

- starts the real ``arqscale exporter`` CLI as a subprocess (default 1 s refresh, so refreshes run during
  the measurement as they do in production);
- **refresh cost**: ``--idle-seconds`` with no request; the exporter's CPU (``/proc``) and Redis' CPU
  (``INFO cpu``) over that window divided by the refreshes it made (``arqscale_exporter_refreshes_total``),
  and the median of ``arqscale_exporter_refresh_duration_seconds`` (wall time: the round trip, Redis'
  counting script, parsing, rendering, gzip);
- **latency**: ``--requests`` sequential requests per endpoint from this process over one keep-alive
  connection: the time from sending the request to having read the whole body. ``/metrics`` is asked for
  gzip, as Prometheus does, and the body is not decompressed in the timed part (that is the scraper's
  work, measured apart as ``client gunzip``);
- with ``--open-rate R``: ``/metrics`` and KEDA again, GETs due at R per second whatever the answers (open loop),
  each latency from its due time: the sequential client hides a long stall behind one slow request.

Jobs are queue entries (sorted-set members, leases, completed index): the counts never read payloads, so
none are written. ``--json FILE`` writes every figure (for a full-run driver); the exit status is 0 when
the run completed, whatever the floors say.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from arqscale.core.ports import free_port  # one process never hands out one port twice

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks-exporter.md"
BEGIN, END = "<!-- exporter-bench:begin -->", "<!-- exporter-bench:end -->"
CURRENT = "this checkout"
# Issue 16's floors at 1,000 queues.
FLOOR_QUEUES = 1000
FLOOR_METRICS_P99_MS = 2.0
FLOOR_API_P99_MS = 1.0
FLOOR_REFRESH_CPU_MS = 50.0
METRICS, API, KEDA = "/metrics", "metrics API, one queue", "KEDA endpoint"

# KEYS: queue, active, completed. ARGV: id prefix, first index, last index, now ms.
FILL_LUA = """
local now = tonumber(ARGV[4])
local q, a, c = {}, {}, {}
local function flush()
  if #q > 0 then redis.call('ZADD', KEYS[1], unpack(q)); q = {} end
  if #a > 0 then redis.call('ZADD', KEYS[2], unpack(a)); a = {} end
  if #c > 0 then redis.call('ZADD', KEYS[3], unpack(c)); c = {} end
end
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  local id = ARGV[1] .. i
  local r = i % 100
  if r < 3 then
    c[#c + 1] = now - 1000; c[#c + 1] = id
  elseif r < 8 then
    q[#q + 1] = now + 3600000; q[#q + 1] = id
  else
    q[#q + 1] = now - 60000 + (i % 50000); q[#q + 1] = id
    if r < 10 then a[#a + 1] = now + 3600000; a[#a + 1] = id end
  end
  if #q >= 4000 or #a >= 4000 or #c >= 4000 then flush() end
end
flush()
return 1
"""
CHUNK = 50_000
# A queue that has run jobs: every counter set, as the worker scripts leave it.
TOTALS = {
    "enqueued": 5000,
    "started": 4900,
    "completed": 4700,
    "failed": 150,
    "retried": 120,
    "dead": 30,
    "cancelled": 2,
    "requeued": 5,
    "run_ms": 987654,
}


@dataclass
class Result:
    queues: int
    version: str
    endpoint: str
    p50_ms: float
    p99_ms: float
    max_ms: float
    median_p99_ms: float  # the median round's p99: what a typical stretch of this machine gives
    worst_p99_ms: float
    cpu_us: float
    wire_bytes: int


@dataclass
class Refresh:
    queues: int
    version: str
    wall_ms: float  # median of the exporter's own refresh duration gauge
    exporter_cpu_ms: float  # per refresh, best round
    exporter_cpu_ms_worst: float
    redis_cpu_ms: float  # per refresh, best round
    client_gunzip_ms: float  # what decompressing the /metrics page costs the scraper (this process)
    page_bytes: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def source_tree(commit: str, into: Path) -> Path:
    """``src/`` of ``commit``, unpacked into ``into``."""
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


async def fill(redis: Redis, queues: int, jobs: int) -> float:
    started = time.perf_counter()
    script = redis.register_script(FILL_LUA)
    now = int(time.time() * 1000)
    per_queue = jobs // queues
    for q in range(queues):
        name = f"q{q:04d}"
        keys = [f"arq:queue:{name}", f"arqscale:{name}:active", f"arqscale:{name}:completed"]
        for first in range(0, per_queue, CHUNK):
            last = min(first + CHUNK, per_queue) - 1
            await script(keys=keys, args=[f"{name}-", first, last, now])
    async with redis.pipeline(transaction=False) as pipe:
        for q in range(queues):
            pipe.hset(f"arqscale:q{q:04d}:totals", mapping=TOTALS)
        await pipe.execute()
    return time.perf_counter() - started


async def open_loop(port: int, path: str, rate: float, seconds: float) -> list[float]:
    """GETs due at a fixed rate whatever the answers (gzip asked, as Prometheus does): each latency runs from the
    request's due time to its last byte, so a stall counts against every request due during it. The sequential
    client above hides a long stall behind one slow request (coordinated omission)."""
    if str(ROOT / "bench") not in sys.path:  # run by a driver from elsewhere
        sys.path.insert(0, str(ROOT / "bench"))
    from http_enqueue import Pool  # the same raw HTTP/1.1 client as the API benchmark's

    raw = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n".encode()
    pool = Pool("127.0.0.1", port, 64)
    latencies: list[float] = []

    async def one(due: float) -> None:
        if await pool.send(raw) == 200:
            latencies.append((time.perf_counter() - due) * 1000)

    total, start, i = int(rate * seconds), time.perf_counter() + 0.01, 0
    tasks: set[asyncio.Task[None]] = set()
    while i < total:
        while i < total and start + i / rate <= time.perf_counter():
            task = asyncio.ensure_future(one(start + i / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(max(0.0, min(start + i / rate - time.perf_counter(), 0.001)))
    while tasks:
        await asyncio.gather(*list(tasks))
    return latencies


async def warm_up(session: aiohttp.ClientSession, url: str, **kw: Any) -> None:
    for _ in range(50):  # connection, TLS session, code paths
        async with session.get(url, **kw) as resp:
            await resp.read()


async def time_requests(session: aiohttp.ClientSession, url: str, n: int, **kw: Any) -> tuple[list[float], int]:
    samples: list[float] = []
    size = 0
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url, **kw) as resp:
            body = await resp.read()
            assert resp.status == 200, (resp.status, body[:300])
        samples.append((time.perf_counter() - t0) * 1000)
        size = len(body)  # the session does not decompress: bytes on the wire
    return samples, size


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None, name
    return float(found.group(1))


@dataclass
class Round:
    samples: dict[str, tuple[list[float], float, int]]  # endpoint -> samples, exporter CPU µs per request, bytes
    exporter_cpu_ms: float
    redis_cpu_ms: float
    walls_ms: list[float]
    gunzip_ms: float
    page_bytes: int


async def measure(
    redis: Redis, redis_port: int, queues: int, src: Path | None, args: argparse.Namespace, workdir: Path
) -> Round:
    """One exporter process of one version: its refresh cost while idle, then each endpoint's latency."""
    http_port, api_port = free_port(), free_port()
    qfile = workdir / f"queues-{queues}.yaml"
    if not qfile.exists():
        qfile.write_text(
            yaml.safe_dump({"queues": {f"q{q:04d}": {"functions": ["bench.tasks.noop"]} for q in range(queues)}})
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "ARQSCALE_QUEUES_FILE": str(qfile),
        "ARQSCALE_EXPORTER_HOST": "127.0.0.1",
        "ARQSCALE_EXPORTER_PORT": str(http_port),
        "ARQSCALE_METRICS_API_PORT": str(api_port),
        "ARQSCALE_LOG_LEVEL": "WARNING",
    }
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    exporter = await asyncio.create_subprocess_exec(sys.executable, "-m", "arqscale", "exporter", env=env)
    base = f"http://127.0.0.1:{http_port}"
    api = f"https://127.0.0.1:{api_port}/apis/external.metrics.k8s.io/v1beta1/namespaces/default"
    one = f"q{queues // 2:04d}"
    keda_path = f"/keda/v1/queues/{one}"
    try:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            for _ in range(600):
                try:
                    async with session.get(base + "/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # let a refresh or two happen

            async def page() -> str:
                # gzip, as Prometheus asks: serving 1 MB of plain text would add to the CPU being measured
                async with session.get(base + "/metrics", headers={"Accept-Encoding": "gzip"}) as resp:
                    body = await resp.read()
                    packed = resp.headers.get("Content-Encoding") == "gzip"
                return (gzip.decompress(body) if packed else body).decode()

            # Refresh cost: nothing but the refresh loop runs in the exporter over this window.
            text = await page()
            refreshes0, cpu0, rcpu0 = gauge(text, "arqscale_exporter_refreshes_total"), cpu_seconds(exporter.pid), 0.0
            rcpu0 = await redis_cpu(redis)
            walls: list[float] = []
            deadline = time.monotonic() + args.idle_seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                walls.append(gauge(await page(), "arqscale_exporter_refresh_duration_seconds") * 1000)
            text = await page()
            cpu1, rcpu1 = cpu_seconds(exporter.pid), await redis_cpu(redis)
            made = gauge(text, "arqscale_exporter_refreshes_total") - refreshes0
            per = max(made, 1)
            endpoints: list[tuple[str, str, dict[str, Any]]] = [
                (METRICS, base + "/metrics", {"headers": {"Accept-Encoding": "gzip"}}),
                (API, f"{api}/bullmq_queue_waiting?labelSelector=queue%3D{one}", {"ssl": False}),
                (KEDA, base + keda_path, {}),
            ]
            for _, url, kw in endpoints:
                await warm_up(session, url, **kw)
            samples: dict[str, tuple[list[float], float, int]] = {}
            for label, url, kw in endpoints:
                c0 = cpu_seconds(exporter.pid)
                timed, size = await time_requests(session, url, args.requests, **kw)
                samples[label] = (timed, (cpu_seconds(exporter.pid) - c0) / args.requests * 1e6, size)
            if args.open_rate > 0:
                for label, path in ((f"{METRICS}, open loop", "/metrics"), (f"{KEDA}, open loop", keda_path)):
                    c0 = cpu_seconds(exporter.pid)
                    timed = await open_loop(http_port, path, args.open_rate, args.open_seconds)
                    samples[label] = (timed, (cpu_seconds(exporter.pid) - c0) / max(len(timed), 1) * 1e6, 0)
            async with session.get(base + "/metrics", headers={"Accept-Encoding": "gzip"}) as resp:
                packed = await resp.read()
            gunzip = []
            for _ in range(20):
                t0 = time.perf_counter()
                unpacked = gzip.decompress(packed) if resp.headers.get("Content-Encoding") == "gzip" else packed
                gunzip.append((time.perf_counter() - t0) * 1000)
        return Round(
            samples=samples,
            exporter_cpu_ms=(cpu1 - cpu0) / per * 1000,
            redis_cpu_ms=(rcpu1 - rcpu0) / per * 1000,
            walls_ms=walls,
            gunzip_ms=statistics.median(gunzip),
            page_bytes=len(unpacked),
        )
    finally:
        exporter.send_signal(signal.SIGTERM)
        await asyncio.wait_for(exporter.wait(), 20)


async def run_queues(
    queues: int, versions: list[tuple[str, Path | None]], args: argparse.Namespace, workdir: Path
) -> tuple[list[Result], list[Refresh], dict[str, float]]:
    redis_port = free_port()
    rdir = workdir / f"redis-{queues}"
    rdir.mkdir()
    server = await asyncio.create_subprocess_exec(
        args.redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(rdir), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        redis = Redis(host="127.0.0.1", port=redis_port)
        for _ in range(200):
            try:
                await redis.ping()
                break
            except RedisConnectionError:
                await asyncio.sleep(0.05)
        fill_seconds = await fill(redis, queues, args.jobs)
        info = await redis.info("memory")
        rounds: dict[str, list[Round]] = {label: [] for label, _ in versions}
        for r in range(args.repeat):
            shift = r % len(versions)
            for label, src in versions[shift:] + versions[:shift]:
                rounds[label].append(await measure(redis, redis_port, queues, src, args, workdir))
                print(f"  {queues} queues, {label}, round {r + 1} done", file=sys.stderr)
        await redis.aclose()
    finally:
        server.kill()
        await server.wait()
    results: list[Result] = []
    refreshes: list[Refresh] = []
    for label, measured in rounds.items():
        for endpoint in measured[0].samples:
            per_round = [m.samples[endpoint] for m in measured]
            best = min(per_round, key=lambda s: pct(s[0], 99))
            results.append(
                Result(
                    queues=queues,
                    version=label,
                    endpoint=endpoint,
                    p50_ms=pct(best[0], 50),
                    p99_ms=pct(best[0], 99),
                    max_ms=max(best[0]),
                    median_p99_ms=statistics.median(pct(s[0], 99) for s in per_round),
                    worst_p99_ms=max(pct(s[0], 99) for s in per_round),
                    cpu_us=min(s[1] for s in per_round),
                    wire_bytes=best[2],
                )
            )
        refreshes.append(
            Refresh(
                queues=queues,
                version=label,
                wall_ms=statistics.median(w for m in measured for w in m.walls_ms),
                exporter_cpu_ms=min(m.exporter_cpu_ms for m in measured),
                exporter_cpu_ms_worst=max(m.exporter_cpu_ms for m in measured),
                redis_cpu_ms=min(m.redis_cpu_ms for m in measured),
                client_gunzip_ms=min(m.gunzip_ms for m in measured),
                page_bytes=measured[0].page_bytes,
            )
        )
    extra = {"fill_seconds": fill_seconds, "redis_mb": int(info["used_memory"]) / 2**20}
    return results, refreshes, extra


def floors(results: list[Result], refreshes: list[Refresh]) -> list[dict[str, Any]]:
    """Issue 16's floors at 1,000 queues, for each version measured."""
    out: list[dict[str, Any]] = []
    for r in results:
        if r.queues != FLOOR_QUEUES or r.endpoint not in (METRICS, API):
            continue
        limit = FLOOR_METRICS_P99_MS if r.endpoint == METRICS else FLOOR_API_P99_MS
        check = f"{r.endpoint} p99 (best round)"
        met = r.p99_ms <= limit
        out.append({"version": r.version, "check": check, "measured": r.p99_ms, "floor": limit, "met": met})
    for f in refreshes:
        if f.queues == FLOOR_QUEUES:
            check, limit = "exporter CPU per refresh (best round)", FLOOR_REFRESH_CPU_MS
            met = f.exporter_cpu_ms <= limit
            measured = f.exporter_cpu_ms
            out.append({"version": f.version, "check": check, "measured": measured, "floor": limit, "met": met})
    return out


def tables(results: list[Result], refreshes: list[Refresh], extras: dict[int, dict[str, float]], jobs: int) -> str:
    lines = [
        "| queues | version | endpoint | p50 ms | p99 ms | max ms | p99 median round | p99 worst round "
        "| exporter CPU per request | bytes on the wire |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.queues:,} | {r.version} | {r.endpoint} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.2f} "
            f"| {r.median_p99_ms:.2f} | {r.worst_p99_ms:.2f} | {r.cpu_us:.0f} µs | {r.wire_bytes:,} |"
        )
    lines += [
        "",
        "| queues | version | refresh wall ms (median) | exporter CPU ms per refresh: best (worst) "
        "| Redis CPU ms per refresh | /metrics page | client gunzip ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in refreshes:
        lines.append(
            f"| {f.queues:,} | {f.version} | {f.wall_ms:.1f} | {f.exporter_cpu_ms:.1f} ({f.exporter_cpu_ms_worst:.1f}) "
            f"| {f.redis_cpu_ms:.1f} | {f.page_bytes:,} B | {f.client_gunzip_ms:.2f} |"
        )
    checks = floors(results, refreshes)
    if checks:
        lines += ["", "| floor at 1,000 queues | version | measured | floor | verdict |"]
        lines.append("| --- | --- | ---: | ---: | --- |")
        for c in checks:
            verdict = "**met**" if c["met"] else "not met"
            lines.append(f"| {c['check']} | {c['version']} | {c['measured']:.2f} | {c['floor']:g} | {verdict} |")
    lines += ["", "| queues | jobs in Redis | Redis memory | fill time |", "| ---: | ---: | ---: | ---: |"]
    for q, e in extras.items():
        lines.append(f"| {q:,} | {jobs:,} | {e['redis_mb']:.0f} MiB | {e['fill_seconds']:.1f} s |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per endpoint and round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per version; the table shows the best")
    parser.add_argument("--idle-seconds", type=float, default=4.0, help="window for the refresh cost, per round")
    parser.add_argument("--open-rate", type=float, default=0.0, help="also GETs at this fixed rate (open loop), per s")
    parser.add_argument("--open-seconds", type=float, default=5.0, help="open loop: seconds per endpoint and round")
    parser.add_argument("--baseline", default="", help="also the exporter as of this git commit, same run")
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite the results block of {DOC.name}")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    load_start = os.getloadavg()
    all_results: list[Result] = []
    all_refreshes: list[Refresh] = []
    extras: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        versions: list[tuple[str, Path | None]] = [(CURRENT, None)]
        if args.baseline:
            versions.append((f"at {args.baseline}", source_tree(args.baseline, Path(tmp) / "baseline")))
        for q in args.queues:
            results, refreshes, extra = await run_queues(q, versions, args, Path(tmp))
            all_results += results
            all_refreshes += refreshes
            extras[q] = extra
    load_end = os.getloadavg()
    command = " ".join(["python bench/exporter_latency.py", *argv])
    header = (
        f"Command: `{command}` (wall time {time.perf_counter() - started:.0f} s)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{load_start[0]:.2f} at the start and {load_end[0]:.2f} at the end; {args.repeat} rounds per version of "
        f"{args.requests} sequential requests per endpoint (best round shown), one keep-alive connection, exporter "
        f"refreshing every 1 s meanwhile; refresh cost over {args.idle_seconds:g} s without requests per round.\n"
    )
    text = header + "\n" + tables(all_results, all_refreshes, extras, args.jobs) + "\n"
    return {
        "command": command,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "results": [asdict(r) for r in all_results],
        "refresh": [asdict(f) for f in all_refreshes],
        "floors": floors(all_results, all_refreshes),
        # bench/full_run.py's summary of floors: check, measured, target, verdict.
        "checks": [
            {
                "check": f"exporter at 1,000 queues: {c['check']} ({c['version']})",
                "measured": f"{c['measured']:.2f} ms",
                "target": f"<= {c['floor']:g} ms",
                "verdict": "**met**" if c["met"] else "**MISSED**",
            }
            for c in floors(all_results, all_refreshes)
        ],
        "setup": {str(q): e for q, e in extras.items()},
        "markdown": text,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if shutil.which(args.redis_server) is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    try:
        import uvloop

        summary = uvloop.run(run(args, argv))
    except ImportError:  # pragma: no cover
        summary = asyncio.run(run(args, argv))
    print(summary["markdown"])
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.write_docs:
        text = DOC.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(text[:start] + "\n" + summary["markdown"] + text[end:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
