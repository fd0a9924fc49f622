"""HTTP enqueue: the API's throughput and latency, closed loop at N concurrent clients and open loop at fixed rates.

    python bench/http_enqueue.py                       # ~1 minute: 50 clients, then 1,000 requests/s
    python bench/http_enqueue.py --baseline 0f238ea    # also the API as of that commit, same run, rotating order
    python bench/http_enqueue.py --rates 500 1000 2000 --seconds 10 --json out.json

Processes, each its own: a private ``redis-server`` on a free loopback port (``FLUSHALL`` before each
measurement), the real ``arqscale api`` CLI (one queue, a bearer token as in production, INFO logging), and
the load generator (this file with ``--client``: a raw asyncio HTTP/1.1 client with keep-alive connections,
on uvloop) so that its CPU does not share a process with the server's. Every request is
``POST /v1/queues/bench/jobs`` with a small JSON job; a response counts only when it is ``202``.

- **Closed loop** (``--concurrency``, default 50): that many clients, each sending its next request when
  the last one answered, for ``--seconds`` after one second of warm-up. Throughput, p50, p99. A closed loop
  slows down with the server, so its latencies hide queueing (coordinated omission): it measures capacity.
- **Open loop** (``--rates``, default 1,000 requests/s): request *i* is due at ``start + i / rate``,
  whatever happened to the others; its latency runs from that due time (not from when it was sent) to the
  last byte of the response, so a stall shows in every request that waited behind it. The generator wakes
  at least every millisecond and sends everything due; ``send lag`` is how late it was (its own overhead).
- **The generator's own cost**, stated beside the figures: its CPU per request, and the same open loop
  against a null server (``--null-server``: an asyncio protocol answering every request with a canned
  ``202`` at once), which is the latency floor of generator + loopback on this machine.

Server CPU per request is the API process's CPU (``/proc``) over the window, Redis CPU per request from
``INFO cpu``. ``--json FILE`` writes every figure; ``main(argv)`` runs it from a driver.
"""

from __future__ import annotations

import argparse
import asyncio
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
from io import BytesIO
from pathlib import Path
from typing import Any

from arqscale.core.ports import free_port  # one process never hands out one port twice

ROOT = Path(__file__).resolve().parent.parent
CURRENT = "this checkout"
NULL = "null server (generator floor)"
TOKEN = "bench-token-0123456789"
QUEUE = "bench"
BODY = json.dumps({"function": "noop", "args": [1, "two"], "kwargs": {"user_id": 42, "note": "hello"}}).encode()
PATH = f"/v1/queues/{QUEUE}/jobs"
FLOOR_P99_MS = 5.0  # issue 16: p99 at most 5 ms at 1,000 requests/s
FLOOR_RATE = 1000
SEEDS_PROMISE_MS = 100.0  # the seeds: "Add job to queue (< 100ms)", "API response: < 100ms"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def source_tree(commit: str, into: Path) -> Path:
    """``src/`` of ``commit``, unpacked into ``into``."""
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


# ---- the load generator (its own process) ---------------------------------------------------------


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: a canned request out, the response's headers and body in.

    A raw asyncio protocol rather than aiohttp's client: aiohttp spent ~300 µs of CPU per request here, as
    much as the server under test, on a machine where both share two cores. This one spends a fraction."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[int] | None = None
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport instances
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end]
        found = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        size = int(found.group(1)) if found else 0
        if len(self.buffer) < end + 4 + size:
            return
        self.buffer = self.buffer[end + 4 + size :]
        status = int(head[9:12])
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


class Pool:
    """Idle keep-alive connections to one server; a new one is opened when none is idle (up to ``limit``)."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Conn] = []
        self.opened = 0
        self.free = asyncio.Semaphore(limit)

    async def send(self, raw: bytes) -> int:
        async with self.free:
            conn = self.idle.pop() if self.idle else None
            if conn is None or conn.lost:
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(Conn, self.host, self.port)
                self.opened += 1
            status = await conn.request(raw)
            self.idle.append(conn)
            return status


def request_bytes(url: str) -> tuple[str, int, bytes]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return parts.hostname or "127.0.0.1", parts.port or 80, head.encode() + BODY


async def closed_loop(url: str, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    host, port, raw = request_bytes(url)
    pool = Pool(host, port, concurrency)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    cpu0: float | None = None

    async def client() -> None:
        nonlocal errors, cpu0
        while (t0 := time.perf_counter()) < stop_at:
            try:
                ok = await pool.send(raw) == 202
            except OSError:
                ok = False
            t1 = time.perf_counter()
            if t0 >= measure_from:
                if cpu0 is None:
                    cpu0 = time.process_time()
                if ok:
                    latencies.append((t1 - t0) * 1000)
                else:
                    errors += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    cpu = time.process_time() - (cpu0 or 0.0)
    done = len(latencies) + errors
    return {
        "mode": "closed",
        "concurrency": concurrency,
        "requests": done,
        "errors": errors,
        "throughput": len(latencies) / seconds,
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "client_cpu_us": cpu / max(done, 1) * 1e6,
        "connections": pool.opened,
    }


async def open_loop(url: str, rate: float, seconds: float, warmup: float, connections: int) -> dict[str, Any]:
    host, port, raw = request_bytes(url)
    pool = Pool(host, port, connections)
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0

    async def one(due: float, timed: bool) -> None:
        nonlocal errors
        sent = time.perf_counter()
        try:
            ok = await pool.send(raw) == 202
        except OSError:
            ok = False
        if timed:
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
                lags.append((sent - due) * 1000)
            else:
                errors += 1

    total = int(rate * (warmup + seconds))
    first_timed = int(rate * warmup)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.01
    cpu0 = 0.0
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and start + i / rate <= now:
            if i == first_timed:
                cpu0 = time.process_time()
            task = asyncio.ensure_future(one(start + i / rate, i >= first_timed))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, min(start + i / rate - time.perf_counter(), 0.001)))
    while tasks:
        await asyncio.gather(*list(tasks))
    cpu = time.process_time() - cpu0
    timed = total - first_timed
    return {
        "mode": "open",
        "rate": rate,
        "requests": timed,
        "errors": errors,
        "throughput": len(latencies) / seconds,
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "p999_ms": pct(latencies, 99.9),
        "max_ms": max(latencies, default=float("nan")),
        "lag_p50_ms": pct(lags, 50),
        "lag_p99_ms": pct(lags, 99),
        "client_cpu_us": cpu / max(timed, 1) * 1e6,
        "connections": pool.opened,
    }


def client_main(spec: str) -> None:
    import uvloop

    job = json.loads(spec)
    if job["mode"] == "closed":
        out = uvloop.run(closed_loop(job["url"], job["concurrency"], job["seconds"], job["warmup"]))
    else:
        out = uvloop.run(open_loop(job["url"], job["rate"], job["seconds"], job["warmup"], job["connections"]))
    print(json.dumps(out))


# ---- the null server: the generator's latency floor ----------------------------------------------

NULL_REPLY = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class NullHTTP(asyncio.Protocol):
    """Answers each request (headers + Content-Length body) with a canned 202; keep-alive."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            found = re.search(rb"(?i)content-length:\s*(\d+)", self.buffer[:end])
            size = int(found.group(1)) if found else 0
            if len(self.buffer) < end + 4 + size:
                return
            self.buffer = self.buffer[end + 4 + size :]
            self.transport.write(NULL_REPLY)  # type: ignore[attr-defined]


def null_server_main(port: int) -> None:
    import uvloop

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(NullHTTP, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


# ---- the harness ----------------------------------------------------------------------------------


def run_client(job: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--client", json.dumps(job)], stdout=subprocess.PIPE, text=True, check=True
    )
    return dict(json.loads(done.stdout))


def wait_http(port: int, path: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on port {port} after {timeout} s")


class Redis:
    def __init__(self, server: str, workdir: Path) -> None:
        import redis

        self.port = free_port()
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cpu(self) -> float:
        info: dict[str, Any] = self.client.info("cpu")  # type: ignore[assignment]
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_api(redis_port: int, workdir: Path, src: Path | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    qfile = workdir / "queues.yaml"
    qfile.write_text(f"queues:\n  {QUEUE}:\n    functions: [bench.tasks.noop]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "ARQSCALE_QUEUES_FILE": str(qfile),
        "ARQSCALE_API_TOKEN": TOKEN,
        "ARQSCALE_LOG_LEVEL": "INFO",
    }
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "arqscale", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(port, "/livez")
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(
    redis: Redis, label: str, src: Path | None, args: argparse.Namespace, workdir: Path
) -> list[dict[str, Any]]:
    """Every load of one server process (an API version, or the null server)."""
    if label == NULL:
        port = free_port()
        proc: subprocess.Popen[bytes] = subprocess.Popen([sys.executable, __file__, "--null-server", str(port)])
        time.sleep(0.5)
    else:
        proc, port = start_api(redis.port, workdir, src)
    url = f"http://127.0.0.1:{port}{PATH}"
    jobs: list[dict[str, Any]] = []
    if label != NULL:
        jobs.append({"mode": "closed", "url": url, "concurrency": args.concurrency})
    jobs += [{"mode": "open", "url": url, "rate": rate, "connections": args.connections} for rate in args.rates]
    out = []
    try:
        for job in jobs:
            job |= {"seconds": args.seconds, "warmup": args.warmup}
            redis.client.flushall()
            cpu0, rcpu0, t0 = cpu_seconds(proc.pid), redis.cpu(), time.perf_counter()
            result = run_client(job)
            # Whole run, warm-up included: server and Redis CPU per request sent.
            sent = result["requests"] * (args.seconds + args.warmup) / args.seconds
            result["server_cpu_us"] = (cpu_seconds(proc.pid) - cpu0) / sent * 1e6
            result["redis_cpu_us"] = (redis.cpu() - rcpu0) / sent * 1e6
            result["wall_s"] = time.perf_counter() - t0
            result["version"] = label
            result["load_average"] = os.getloadavg()[0]
            out.append(result)
            print(f"  {label}: {job['mode']} {job.get('rate') or job.get('concurrency')} done", file=sys.stderr)
    finally:
        stop(proc)
    return out


def rounds_of(results: list[dict[str, Any]], version: str, mode: str, key: float) -> list[dict[str, Any]]:
    return [
        r
        for r in results
        if r["version"] == version and r["mode"] == mode and (r.get("rate") or r.get("concurrency")) == key
    ]


def median_p99(results: list[dict[str, Any]], version: str, mode: str, key: float) -> float:
    rows = rounds_of(results, version, mode, key)
    return statistics.median(r["p99_ms"] for r in rows) if rows else float("nan")


def best(results: list[dict[str, Any]], version: str, mode: str, key: float) -> dict[str, Any] | None:
    """The round with the lowest p99 (closed loop: the highest throughput) for one version and load."""
    rows = rounds_of(results, version, mode, key)
    if not rows:
        return None
    if mode == "closed":
        return max(rows, key=lambda r: r["throughput"])
    return min(rows, key=lambda r: r["p99_ms"])


def tables(results: list[dict[str, Any]], versions: list[str], args: argparse.Namespace) -> tuple[str, list[Any]]:
    lines = [
        f"### Closed loop: {args.concurrency} concurrent clients (best of {args.repeat} rounds by throughput)",
        "",
        "| version | requests/s | p50 ms | p99 ms | max ms | server CPU µs/req | Redis CPU µs/req "
        "| client CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in versions:
        r = best(results, v, "closed", args.concurrency)
        if r is not None:
            lines.append(
                f"| {v} | {r['throughput']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} "
                f"| {r['server_cpu_us']:.0f} | {r['redis_cpu_us']:.0f} | {r['client_cpu_us']:.0f} |"
            )
    lines += [
        "",
        f"### Open loop: fixed arrival rate, latency from each request's due time (best of {args.repeat} rounds "
        "by p99)",
        "",
        "| version | rate/s | answered/s | p50 ms | p99 ms | p99 median round | p99.9 ms | max ms | send lag p99 ms "
        "| server CPU µs/req | client CPU µs/req | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate in args.rates:
        for v in [*versions, NULL]:
            r = best(results, v, "open", rate)
            if r is not None:
                server = "-" if v == NULL else f"{r['server_cpu_us']:.0f}"
                typical = median_p99(results, v, "open", rate)
                lines.append(
                    f"| {v} | {rate:,.0f} | {r['throughput']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                    f"| {typical:.2f} | {r['p999_ms']:.2f} | {r['max_ms']:.2f} | {r['lag_p99_ms']:.2f} | {server} "
                    f"| {r['client_cpu_us']:.0f} | {r['errors']} |"
                )
    checks: list[dict[str, Any]] = []
    for v in versions:
        r = best(results, v, "open", FLOOR_RATE)
        if r is not None:
            checks.append({"version": v, "check": f"p99 at {FLOOR_RATE:,} requests/s", "measured": r["p99_ms"],
                           "floor": FLOOR_P99_MS, "met": r["p99_ms"] <= FLOOR_P99_MS})  # fmt: skip
        c = best(results, v, "closed", args.concurrency)
        if c is not None:
            check = f"p99 at {args.concurrency} clients vs the seeds' < 100 ms"
            met = c["p99_ms"] < SEEDS_PROMISE_MS
            row = {"version": v, "check": check, "measured": c["p99_ms"], "floor": SEEDS_PROMISE_MS, "met": met}
            checks.append(row)
    if checks:
        lines += ["", "| floor | version | measured ms | floor ms | verdict |", "| --- | --- | ---: | ---: | --- |"]
        for c in checks:
            verdict = "**met**" if c["met"] else "not met"
            lines.append(f"| {c['check']} | {c['version']} | {c['measured']:.2f} | {c['floor']:g} | {verdict} |")
    return "\n".join(lines), checks


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50, help="closed-loop clients")
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0], help="open-loop arrival rates, per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window of each load")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of the same load before the window")
    parser.add_argument("--connections", type=int, default=256, help="open loop: most connections at once")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the versions, in rotating order")
    parser.add_argument("--baseline", default="", help="also the API as of this git commit, same run")
    parser.add_argument("--no-null", action="store_true", help="skip the null-server calibration")
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        client_main(argv[1])
        return 0
    if argv[:1] == ["--null-server"]:
        null_server_main(int(argv[1]))
        return 0
    args = parse_args(argv)
    started = time.perf_counter()
    load_start = os.getloadavg()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        versions: list[tuple[str, Path | None]] = [(CURRENT, None)]
        if args.baseline:
            versions.append((f"at {args.baseline}", source_tree(args.baseline, work / "baseline")))
        runs = versions + ([] if args.no_null else [(NULL, None)])
        redis = Redis(args.redis_server, work)
        try:
            for rnd in range(args.repeat):
                shift = rnd % len(runs)
                for label, src in runs[shift:] + runs[:shift]:
                    results += measure(redis, label, src, args, work)
        finally:
            redis.close()
    load_end = os.getloadavg()
    command = " ".join(["python bench/http_enqueue.py", *argv])
    body, checks = tables(results, [label for label, _ in versions], args)
    text = (
        f"Command: `{command}` (wall time {time.perf_counter() - started:.0f} s)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{load_start[0]:.2f} at the start and {load_end[0]:.2f} at the end.\n\n" + body + "\n"
    )
    print(text)
    if args.json is not None:
        summary = {
            "command": command,
            "load_average_start": load_start,
            "load_average_end": load_end,
            "median_load_average": statistics.median(r["load_average"] for r in results),
            "results": results,
            "floors": checks,
            # bench/full_run.py's summary of floors: check, measured, target, verdict.
            "checks": [
                {
                    "check": f"HTTP enqueue: {c['check']} ({c['version']})",
                    "measured": f"{c['measured']:.2f} ms",
                    "target": f"<= {c['floor']:g} ms",
                    "verdict": "**met**" if c["met"] else "**MISSED**",
                }
                for c in checks
            ],
            "markdown": text,
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
