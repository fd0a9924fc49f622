"""Regenerate the screenshots in docs/dashboard.md from a real demo stack (Playwright + Debian's Chromium).

    python scripts/dashboard_screenshots.py              # about two minutes; writes docs/images/dashboard-*.png
    python scripts/dashboard_screenshots.py --wait 120   # let the charts fill longer first

Starts a private redis-server and ``arqscale demo --autoscale`` on it (the API, the exporter, the local
autoscaler and its workers draining a burst of demo jobs), waits ``--wait`` seconds so the charts hold a few
samples, then opens the dashboard and captures: the queues with the email queue's charts, one job with its
timeline, the workers of a queue, and the queues in the dark color scheme.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from playwright.async_api import Page, async_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from redis_server import RedisServer, free_port  # noqa: E402

OUT = ROOT / "docs" / "images"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: dict[str, object] = json.load(resp)
        return data


async def shoot(page: Page, name: str) -> None:
    await page.wait_for_timeout(1500)  # a refresh or two, so counts and charts are drawn
    await page.screenshot(path=str(OUT / f"dashboard-{name}.png"), full_page=True)
    print(f"wrote docs/images/dashboard-{name}.png")


async def capture(base: str) -> None:
    completed = get(base + "v1/queues/email/jobs?state=completed&limit=1")["items"]
    job_id = completed[0]["job_id"] if isinstance(completed, list) and completed else None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for scheme in ("light", "dark"):
            context = await browser.new_context(color_scheme=scheme, viewport={"width": 1400, "height": 900})
            page = await context.new_page()
            await page.goto(base + "#/queue/email/charts/300")  # the demo is minutes long: the 5-minute span
            await page.locator("#charts figure").first.wait_for()
            await shoot(page, "charts" if scheme == "light" else "dark")
            if scheme == "light":
                if job_id:
                    await page.goto(base + "#/job/" + urllib.request.quote(str(job_id), safe=""))
                    await page.locator('#job [data-field="timeline"]').wait_for()
                    await page.locator("#lookup").scroll_into_view_if_needed()
                    await shoot(page, "job")
                await page.goto(base + "#/queue/email/workers")
                await page.locator("#workers-list").wait_for()
                await shoot(page, "workers")
            await context.close()
        await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=60, help="seconds of demo before the screenshots")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        api_port, exporter_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
        env["REDIS_URL"] = server.url
        argv_demo = [sys.executable, "-m", "arqscale", "demo", "--autoscale", "--jobs", "600",
                     "--duration", str(args.wait + 60), "--api-port", str(api_port),
                     "--exporter-port", str(exporter_port), "--demo-dir", str(Path(tmp) / "demo")]  # fmt: skip
        demo = subprocess.Popen(argv_demo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{api_port}/"
            asyncio.run(asyncio.sleep(args.wait))
            asyncio.run(capture(base))
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                demo.kill()
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
