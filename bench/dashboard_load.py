"""What the dashboard costs: the page's weight, and its load on Redis with 100 queues, in one run.

    python bench/dashboard_load.py                  # 100 queues, 60 s with the page open
    python bench/dashboard_load.py --queues 100 --seconds 60

One private redis-server and one real ``arqscale api`` (which samples the history every 10 s) on a queues
file of ``--queues`` queues, each with a few jobs. Measured, each over ``--seconds``:

1. the API alone (no page): Redis commands per second (``total_commands_processed`` deltas), which is
   the history sampler's cost;
2. the same with the dashboard open in Chromium (refreshing every second), and then with one queue's
   jobs tab and charts open too;

and the page's weight: the bytes Chromium received for the first load (HTML, CSS, JS and the first API
answers, from the network events' encoded lengths), then per second of refresh. Also the history's
memory per queue after an hour of samples (``MEMORY USAGE`` of a full set written by ``history.record``).
Results go to stdout as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from arqscale.core import history
from arqscale.core.models import QueueCounts
from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from redis_server import RedisServer, free_port

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def start_api(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "arqscale", "api", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(argv, env=env)


async def commands(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_commands_processed"])


async def rate(redis: Redis, seconds: float) -> float:
    before, started = await commands(redis), time.monotonic()
    await asyncio.sleep(seconds)
    return (await commands(redis) - before - 1) / (time.monotonic() - started)


async def history_bytes_per_queue(redis: Redis) -> int:
    now = time.time()
    counts = {
        "m": QueueCounts(queue="m", waiting=12345, active=67, delayed=890, held=3, oldest_waiting_seconds=123.456)
    }
    for i in range(history.KEEP_SECONDS // history.STEP_SECONDS + 2):
        totals = {"m": {"completed": 1_000_000 + 500 * i, "failed": 1000 + i, "dead": 10 + i}}
        await history.record(redis, counts, {"m": 12}, totals, now - history.KEEP_SECONDS + 10 * i)
    used = int(await redis.memory_usage(history.history_key("m")) or 0)
    await redis.delete(history.history_key("m"))
    return used


async def main_async(n_queues: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            redis = Redis.from_url(server.url)
            queues = {f"q{i:03d}": {"functions": ["arqscale.demo.tasks.send_email"]} for i in range(n_queues)}
            qfile = Path(tmp) / "queues.yaml"
            qfile.write_text(json.dumps({"queues": queues}))
            specs = parse_queues({"queues": queues})
            producer = Producer(redis, specs)
            for name in specs:
                for j in range(5):
                    await producer.enqueue(name, "send_email", f"{j}@example.com")
            per_queue = await history_bytes_per_queue(redis)
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
            env |= {"REDIS_URL": server.url, "ARQSCALE_QUEUES_FILE": str(qfile), "ARQSCALE_LOG_LEVEL": "WARNING"}
            api = start_api(port, env)
            try:
                await asyncio.sleep(3)
                alone = await rate(redis, seconds)
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                    page = await browser.new_page()
                    cdp = await page.context.new_cdp_session(page)
                    await cdp.send("Network.enable")
                    received = [0]
                    cdp.on(
                        "Network.loadingFinished",
                        lambda e: received.__setitem__(0, received[0] + e["encodedDataLength"]),
                    )
                    await page.goto(f"http://127.0.0.1:{port}/")
                    await page.locator('tr[data-queue="q000"]').wait_for()
                    await page.wait_for_load_state("networkidle")
                    first_load = received[0]
                    received[0] = 0
                    open_rate = await rate(redis, seconds)
                    per_second = received[0] / seconds
                    await page.locator('tr[data-queue="q000"] [data-action="jobs"]').click()
                    await page.locator('tr[data-queue="q000"] [data-action="charts"]').click()
                    received[0] = 0
                    views_rate = await rate(redis, seconds)
                    views_per_second = received[0] / seconds
                    await browser.close()
            finally:
                api.terminate()
                api.wait(10)
            await redis.aclose()
        finally:
            server.stop()
    print(f"## Dashboard cost, {n_queues} queues, {seconds:.0f} s per measurement\n")
    print("| what | value |\n| --- | --- |")
    print(f"| first load (HTML, CSS, JS, first API answers) | {first_load / 1024:.1f} KiB |")
    print(f"| refresh traffic, queue table only | {per_second / 1024:.1f} KiB/s |")
    print(f"| refresh traffic, with a jobs tab and charts open | {views_per_second / 1024:.1f} KiB/s |")
    print(f"| Redis commands/s, API alone (history sampler) | {alone:.1f} |")
    print(f"| Redis commands/s, page open | {open_rate:.1f} |")
    print(f"| Redis commands/s, page with a jobs tab and charts | {views_rate:.1f} |")
    print(f"| history memory per queue (an hour of samples) | {per_queue / 1024:.1f} KiB |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.queues, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
