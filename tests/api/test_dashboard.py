"""The dashboard page in a real Chromium (Debian's, driven by Playwright) against a real redis-server.

The API runs in-process for the page's features and as a real ``arqscale api`` subprocess for the
token prompt. Jobs are put in each state with the worker protocol's own writes (``protocol_steps``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from arq.connections import ArqRedis
from playwright.async_api import Browser, Dialog, Locator, Page, Route, async_playwright, expect
from redis.asyncio import Redis

from arqscale.api.app import create_app
from arqscale.api.dashboard import PATHS
from arqscale.core import job_logs, keys, queue_control
from arqscale.core.dead_letters import DeadLetters
from arqscale.core.job_status import JobStatusReader
from arqscale.core.live_workers import list_workers
from arqscale.core.models import JobState, Progress
from arqscale.core.producer import Producer
from arqscale.core.schedule_spec import Schedule
from arqscale.core.schedules import ScheduleKeys, ScheduleStore
from arqscale.core.serializers import json_dumps
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.core.webhook_store import DeadDelivery, WebhookKeys
from arqscale.worker.scheduler import Scheduler
from protocol_steps import bury, finish, pick_up
from redis_server import RedisServer, free_port
from worker_processes import stop_all, wait_until, worker_starter

CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUEUES = {
    "email": {"functions": ["tests.tasks.send_email"]},
    "verification": {"functions": ["tests.tasks.verify_document"], "max_tries": 2},
}
SPECS = parse_queues({"queues": QUEUES})
STATIC = Path(__file__).resolve().parents[2] / "src" / "arqscale" / "api" / "static"
# Rendered as markup, either part would run and set window.pwned.
HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> provider said no'


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail("chromium is not installed: run scripts/install-test-deps (apt-get install chromium)")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def _serve(redis: Redis, token: str | None = None, specs: dict[str, QueueSpec] | None = None) -> TestServer:
    server = TestServer(create_app(specs or SPECS, redis, max_body_bytes=65536, token=token), host="127.0.0.1")
    await server.start_server()
    return server


def _cell(page: Page, queue: str, column: str) -> Locator:
    return page.locator(f'tr[data-queue="{queue}"] td[data-col="{column}"]')


def _watch(page: Page) -> list[str]:
    """Uncaught errors and console errors (a CSP violation is one), but not the API's 4xx answers."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    return problems


async def test_page_and_assets_are_served_without_the_token(redis: Redis) -> None:
    server = await _serve(redis, token="s3cret")
    try:
        async with aiohttp.ClientSession() as http:
            for path in sorted(PATHS):
                async with http.get(server.make_url(path)) as resp:
                    assert resp.status == 200, path
                    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
                    assert resp.headers["X-Frame-Options"] == "DENY"
                    body = await resp.read()
                name = "dashboard.html" if path in ("/", "/dashboard") else path.lstrip("/")
                assert body == (STATIC / name).read_bytes()  # the packaged file, unchanged
            async with http.get(server.make_url("/dashboard.js")) as resp:
                assert resp.content_type == "text/javascript"
            async with http.head(server.make_url("/")) as resp:
                assert resp.status == 200 and resp.content_type == "text/html"
            # The page is open; the API behind it is not.
            async with http.get(server.make_url("/v1/queues")) as resp:
                assert resp.status == 401
            async with http.post(server.make_url("/dashboard")) as resp:
                assert resp.status == 401  # other methods are not the dashboard's
    finally:
        await server.close()


async def test_counts_pause_dead_letters_and_lookup(redis: Redis, browser: Browser, tmp_path: Path) -> None:
    producer = Producer(redis, SPECS)
    for i in range(3):
        await producer.enqueue("email", "send_email", f"user{i}@example.com", job_id=f"mail-{i}")
    await producer.enqueue("email", "send_email", "later@example.com", job_id="mail-later", defer_seconds=3600)
    await pick_up(redis, SPECS["email"], "mail-0")
    progress = Progress(percent=40, message="rendering <b>template</b>", updated_at=1.0)
    await redis.set(keys.progress_key("mail-0"), progress.model_dump_json())
    await producer.enqueue("verification", "verify_document", {"doc": "passport"}, job_id="doc-ok")
    await finish(redis, SPECS["verification"], "doc-ok", success=True, result={"verdict": "<i>genuine</i>"})
    for job_id, error in (("doc-1", "ProviderError: timed out"), ("doc-evil", HOSTILE)):
        await producer.enqueue("verification", "verify_document", {"doc": job_id, "note": "<b>x</b>"}, job_id=job_id)
        await pick_up(redis, SPECS["verification"], job_id)
        await bury(redis, SPECS["verification"], job_id, error=error)

    server = await _serve(redis)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await page.goto(str(server.make_url("/dashboard")))
        expected = {"waiting": "2", "active": "1", "delayed": "1", "backlog": "3", "failed": "0"}
        for column, value in expected.items():
            await expect(_cell(page, "email", column)).to_have_text(value)
        await expect(_cell(page, "verification", "failed")).to_have_text("2")
        await expect(_cell(page, "verification", "completed")).to_have_text("1")

        # The table refreshes by itself.
        await producer.enqueue("email", "send_email", "new@example.com", job_id="mail-new")
        await expect(_cell(page, "email", "waiting")).to_have_text("3")

        # Pause and resume go to Redis.
        email = page.locator('tr[data-queue="email"]')
        await email.locator('[data-action="toggle"]').click()
        await expect(email.locator('[data-action="toggle"]')).to_have_text("Resume")
        assert await queue_control.is_paused(redis, SPECS["email"])
        await expect(_cell(page, "email", "paused")).to_have_text("3")
        await email.locator('[data-action="toggle"]').click()
        await expect(email.locator('[data-action="toggle"]')).to_have_text("Pause")
        assert not await queue_control.is_paused(redis, SPECS["email"])

        # Dead letters: the hostile error is shown as text and runs nothing.
        await page.locator('tr[data-queue="verification"] [data-action="dead"]').click()
        rows = page.locator("#dead-list tbody tr")
        await expect(rows).to_have_count(2)
        evil = page.locator('#dead-list tr[data-job="doc-evil"]')
        await expect(evil.locator("td.error-cell")).to_have_text(HOSTILE)
        await evil.locator('[data-action="view"]').click()
        await expect(page.locator("#detail")).to_be_visible()
        await expect(page.locator("#detail-fields")).to_contain_text('"note": "<b>x</b>"')
        await expect(page.locator("#detail-fields")).to_contain_text("Traceback (most recent call last)")
        assert await page.locator("#dead script, #dead img, #dead b").count() == 0
        assert await page.evaluate("window.pwned") is None

        # Requeue from the detail view puts the job back in its queue.
        await page.locator("#detail-requeue").click()
        await expect(page.locator("#flash")).to_have_text("Requeued doc-evil to verification")
        await expect(rows).to_have_count(1)
        await expect(_cell(page, "verification", "failed")).to_have_text("1")
        assert await redis.zscore(SPECS["verification"].queue_key, "doc-evil") is not None
        assert await DeadLetters(redis, SPECS["verification"]).get("doc-evil") is None
        # And from the list.
        await page.locator('#dead-list tr[data-job="doc-1"] [data-action="requeue"]').click()
        await expect(page.locator("#dead-empty")).to_be_visible()
        assert await redis.zscore(SPECS["verification"].queue_key, "doc-1") is not None

        # Job lookup: state, progress, result, unknown and invalid ids.
        lookup = page.locator("#lookup-id")
        job = page.locator("#job")
        await lookup.fill("doc-evil")
        await lookup.press("Enter")
        await expect(job.locator("[data-state]")).to_have_text("queued")
        await lookup.fill("mail-0")
        await lookup.press("Enter")
        await expect(job.locator("[data-state]")).to_have_text("active")
        await expect(job).to_contain_text("40% rendering <b>template</b>")
        await lookup.fill("doc-ok")
        await lookup.press("Enter")
        await expect(job.locator("[data-state]")).to_have_text("completed")
        await expect(job).to_contain_text('"verdict": "<i>genuine</i>"')
        await lookup.fill("nobody")
        await lookup.press("Enter")
        await expect(job.locator("[data-state]")).to_have_text("not_found")
        await lookup.fill("any <b>id</b>/ at all")  # every id is an id now (issue 10): looked up, shown as text
        await lookup.press("Enter")
        await expect(job.locator("[data-state]")).to_have_text("not_found")
        await expect(job).to_contain_text("any <b>id</b>/ at all")
        assert await page.locator("#job b, #job i").count() == 0
        await lookup.fill("mail-0")
        await lookup.press("Enter")
        await expect(job.locator("[data-state]")).to_have_text("active")
        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        assert problems == []
    finally:
        await page.close()
        await server.close()


@pytest.fixture
def api_with_token(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    """A real ``arqscale api`` with a bearer token and a queues file."""
    queues_file = tmp_path / "queues.yaml"
    queues_file.write_text(json.dumps({"queues": QUEUES}))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {
        "REDIS_URL": redis_server.url,
        "ARQSCALE_API_TOKEN": "right-token",
        "ARQSCALE_API_READ_TOKEN": "look-token",
        "ARQSCALE_QUEUES_FILE": str(queues_file),
        "ARQSCALE_LOG_LEVEL": "WARNING",
    }
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "arqscale", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


async def _wait_up(url: str, within: float = 20) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(int(within / 0.05)):
            try:
                async with http.get(url + "/livez") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"arqscale api did not answer at {url}")


async def test_token_prompt_refuses_a_wrong_token(api_with_token: str, redis: Redis, browser: Browser) -> None:
    await _wait_up(api_with_token)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await page.goto(api_with_token + "/")
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#app")).to_be_hidden()

        await page.locator("#token").fill("wrong-token")
        await page.locator("#token").press("Enter")
        await expect(page.locator("#login-error")).to_contain_text("refused this token")
        await expect(page.locator("#app")).to_be_hidden()
        assert await page.evaluate("sessionStorage.length") == 0

        await page.locator("#token").fill("tökén")
        await page.locator("#token").press("Enter")
        await expect(page.locator("#login-error")).to_have_text("A token has only printable ASCII characters.")

        await page.locator("#token").fill("right-token")
        await page.locator("#token").press("Enter")
        await expect(page.locator('tr[data-queue="verification"]')).to_be_visible()
        await expect(page.locator("#login")).to_be_hidden()

        # The token lasts for the tab, so a reload needs no prompt; "Forget token" asks again.
        await page.reload()
        await expect(page.locator('tr[data-queue="email"]')).to_be_visible()
        await page.locator("#sign-out").click()
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#login-error")).to_be_hidden()
        assert await page.evaluate("sessionStorage.length") == 0
        assert problems == []
    finally:
        await page.close()


async def _accept(dialog: Dialog) -> None:
    await dialog.accept()


async def test_dead_letter_pages_requeue_all_and_delete(redis: Redis, browser: Browser) -> None:
    producer = Producer(redis, SPECS)
    spec = SPECS["verification"]
    for i in range(23):
        await producer.enqueue("verification", "verify_document", {"doc": i}, job_id=f"doc-{i:02d}")
        await pick_up(redis, spec, f"doc-{i:02d}")
        await bury(redis, spec, f"doc-{i:02d}", error=f"ProviderError: {i}")
    server = await _serve(redis)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await page.goto(str(server.make_url("/")))
        await page.locator('tr[data-queue="verification"] [data-action="dead"]').click()
        rows = page.locator("#dead-list tbody tr")
        await expect(rows).to_have_count(20)
        await expect(page.locator("#dead-page")).to_have_text("1-20 of 23")
        await expect(page.locator("#dead-prev")).to_be_disabled()
        await page.locator("#dead-next").click()
        await expect(rows).to_have_count(3)
        await expect(page.locator("#dead-page")).to_have_text("21-23 of 23")
        await expect(page.locator("#dead-next")).to_be_disabled()

        # One entry from its row (the browser's confirm() is answered yes), then all of them.
        page.on("dialog", _accept)
        await rows.first.locator('[data-action="delete"]').click()
        await expect(page.locator("#dead-page")).to_have_text("21-22 of 22")
        assert await DeadLetters(redis, spec).count() == 22
        await page.locator("#dead-requeue-all").click()
        await expect(page.locator("#flash")).to_have_text("Requeued 22 job(s) to verification")
        await expect(page.locator("#dead-empty")).to_be_visible()
        assert await redis.zcard(spec.queue_key) == 22

        # New dead letters show up by themselves (the list follows the queue's failed count).
        for job_id in ("doc-05", "doc-06"):
            await pick_up(redis, spec, job_id)
            await bury(redis, spec, job_id, error="ProviderError: again")
        await expect(rows).to_have_count(2)
        await page.locator("#dead-purge-all").click()
        await expect(page.locator("#flash")).to_have_text("Deleted 2 dead letter(s)")
        await expect(page.locator("#dead-empty")).to_be_visible()
        await expect(_cell(page, "verification", "failed")).to_have_text("0")
        assert await DeadLetters(redis, spec).count() == 0
        assert problems == []
    finally:
        await page.close()
        await server.close()


async def test_jobs_by_state_tabs_pages_and_lookup(redis: Redis, browser: Browser, tmp_path: Path) -> None:
    producer = Producer(redis, SPECS)
    email = SPECS["email"]
    for i in range(22):
        await producer.enqueue("email", "send_email", f"user{i}@example.com", job_id=f"wait-{i:02d}")
    await producer.enqueue("email", "send_email", "vip@example.com", job_id="wait-urgent", priority=0)
    await producer.enqueue("email", "send_email", "later@example.com", job_id="delayed-1", defer_seconds=3600)
    await producer.enqueue("email", "send_email", "run@example.com", job_id="running-1")
    await pick_up(redis, email, "running-1")
    await redis.set(
        keys.progress_key("running-1"), Progress(percent=60, message="<b>sending</b>", updated_at=1.0).model_dump_json()
    )
    await producer.enqueue("email", "send_email", "done@example.com", job_id="done-1")
    await pick_up(redis, email, "done-1")
    await finish(redis, email, "done-1", success=True, result={"sent": True})
    await producer.enqueue("verification", "verify_document", {"doc": "x"}, job_id="doc-evil")
    await pick_up(redis, SPECS["verification"], "doc-evil")
    await bury(redis, SPECS["verification"], "doc-evil", error=HOSTILE)

    server = await _serve(redis)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await page.goto(str(server.make_url("/")))
        await page.locator('tr[data-queue="email"] [data-action="jobs"]').click()
        jobs = page.locator("#jobs")
        rows = page.locator("#jobs-list tbody tr")
        tab = page.locator("#jobs-tabs")
        await expect(jobs).to_be_visible()
        await expect(tab.locator('[data-state="waiting"]')).to_have_attribute("aria-selected", "true")
        await expect(tab.locator('[data-state="waiting"]')).to_have_text("Waiting (23)")
        await expect(tab.locator('[data-state="delayed"]')).to_have_text("Delayed (1)")
        # Waiting: the order workers take them, the urgent job first; 20 a page.
        await expect(rows).to_have_count(20)
        await expect(rows.first).to_have_attribute("data-job", "wait-urgent")
        await expect(page.locator("#jobs-page")).to_have_text("1-20 of 23")
        for absent in ("delayed-1", "running-1", "done-1"):
            assert await page.locator(f'#jobs-list tr[data-job="{absent}"]').count() == 0
        await page.locator("#jobs-next").click()
        await expect(rows).to_have_count(3)
        await expect(page.locator('#jobs-list tr[data-job="wait-21"]')).to_be_visible()

        await tab.locator('[data-state="delayed"]').click()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-job", "delayed-1")
        await expect(page.locator("#jobs-when")).to_have_text("Runs at")
        await expect(page.locator("#jobs-page")).to_have_text("1-1 of 1")

        await tab.locator('[data-state="completed"]').click()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-job", "done-1")
        await expect(rows.first).to_contain_text("send_email")

        await tab.locator('[data-state="active"]').click()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("60% <b>sending</b>")

        # The id links to the job view.
        await rows.first.locator('[data-action="view"]').click()
        await expect(page.locator("#job [data-state]")).to_have_text("active")
        await expect(page.locator("#lookup-id")).to_have_value("running-1")

        # A new job shows up in the open tab by itself.
        await tab.locator('[data-state="delayed"]').click()
        await expect(rows).to_have_count(1)
        await producer.enqueue("email", "send_email", "later2@example.com", job_id="delayed-2", defer_seconds=60)
        await expect(rows).to_have_count(2)
        await expect(rows.first).to_have_attribute("data-job", "delayed-2")  # the sooner one first
        await expect(tab.locator('[data-state="delayed"]')).to_have_text("Delayed (2)")

        # Failed lists the dead letters; their errors are text.
        await page.locator('tr[data-queue="verification"] [data-action="jobs"]').click()
        await expect(page.locator("#jobs-queue")).to_have_text("verification")
        await tab.locator('[data-state="failed"]').click()
        await expect(rows).to_have_count(1)
        await expect(rows.first.locator("td.error-cell")).to_have_text(HOSTILE)
        assert await page.locator("#jobs script, #jobs img, #jobs b").count() == 0
        assert await page.evaluate("window.pwned") is None
        await rows.first.locator('[data-action="dead-letter"]').click()
        await expect(page.locator("#detail-id")).to_have_text("doc-evil")
        await page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)

        await page.locator("#jobs-close").click()
        await expect(jobs).to_be_hidden()
        assert problems == []
    finally:
        await page.close()
        await server.close()


async def test_any_arq_job_id_is_viewed_requeued_and_deleted(redis: Redis, browser: Browser) -> None:
    """Ids a plain arq producer may use (issue 10, point 5): percent-encoded in every fetch, shown as text."""
    spec = SPECS["verification"]
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)  # the queue's serializer
    ids = ["a/b ?x=1#f %2F", '<img src=x onerror="window.pwned = 3">', "ünï✓ {x}", "line\nbreak"]
    for job_id in ids:
        assert await arq.enqueue_job("verify_document", {"doc": 1}, _job_id=job_id, _queue_name=spec.queue_key)
        await pick_up(redis, spec, job_id)
        await bury(redis, spec, job_id, error="ProviderError: no")
    server = await _serve(redis)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await page.goto(str(server.make_url("/")))
        await page.locator('tr[data-queue="verification"] [data-action="dead"]').click()
        rows = page.locator("#dead-list tbody tr")
        await expect(rows).to_have_count(len(ids))
        shown = [await row.get_attribute("data-job") for row in await rows.all()]
        assert sorted(s or "" for s in shown) == sorted(ids)
        for job_id in ids:  # the entry's detail, fetched under its encoded id, names the same id
            row = page.locator("#dead-list tbody tr").filter(has=page.get_by_role("button", name=job_id, exact=True))
            await row.locator('[data-action="view"]').click()
            await expect(page.locator("#detail-id")).to_have_text(job_id)
            assert await page.locator("#detail-id").evaluate("e => e.textContent") == job_id
        page.on("dialog", _accept)
        requeued, deleted = ids[0], ids[1]
        for job_id, action in ((requeued, "requeue"), (deleted, "delete")):
            row = page.locator("#dead-list tbody tr").filter(has=page.get_by_role("button", name=job_id, exact=True))
            await row.locator(f'[data-action="{action}"]').click()
            await expect(rows).to_have_count(len(ids) - (1 if action == "requeue" else 2))
        assert await redis.zscore(spec.queue_key, requeued) is not None
        assert await DeadLetters(redis, spec).get(deleted) is None
        assert await DeadLetters(redis, spec).count() == len(ids) - 2
        assert await page.evaluate("window.pwned") is None
        assert problems == []
    finally:
        await page.close()
        await server.close()


LIMITED = parse_queues(
    {
        "queues": {
            **QUEUES,
            "limited": {
                "functions": ["tests.tasks.send_email"],
                "group": {"concurrency": 1},
                "schedules": {"nightly": {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "function": "send_email"}},
            },
        }
    }
)


async def _dismiss(dialog: Dialog) -> None:
    await dialog.dismiss()


async def test_cancel_buttons_schedules_view_and_held_jobs(redis: Redis, browser: Browser, tmp_path: Path) -> None:
    producer = Producer(redis, LIMITED)
    email, limited = LIMITED["email"], LIMITED["limited"]
    await producer.enqueue("email", "send_email", "a@example.com", job_id="mail-wait")
    await producer.enqueue("email", "send_email", "b@example.com", job_id="mail-later", defer_seconds=3600)
    await producer.enqueue("email", "send_email", "c@example.com", job_id="mail-run")
    await pick_up(redis, email, "mail-run")
    for i in range(3):  # key "a" may run one at a time: the other two are held back at enqueue
        await producer.enqueue("limited", "send_email", f"u{i}@example.com", job_id=f"lim-{i}", group="a")
    # Schedules: the declared one as a worker writes it, a runtime one that has fired once (a real scheduler
    # step), and a stored definition that no longer validates, whose problem text carries markup.
    store = ScheduleStore(redis, limited)
    await store.sync_declared()
    await store.put(Schedule(name="minutely", every=1, function="send_email", kwargs={"to": "<b>x</b>"}))
    scheduler = Scheduler(limited, redis)
    for _ in range(100):  # its first tick is at most a second away; each step says how long to sleep
        await asyncio.sleep(await scheduler.step())
        if scheduler.fired:
            break
    [last] = [v.last_job for v in await store.views() if v.name == "minutely"]
    assert last is not None
    broken = json.dumps({"origin": "api", "schedule": {"cron": HOSTILE, "function": "send_email"}})
    await redis.hset(ScheduleKeys.for_queue("limited").defs, "broken", broken)

    statuses = JobStatusReader(redis, LIMITED)
    server = await _serve(redis, specs=LIMITED)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await page.goto(str(server.make_url("/dashboard")))
        # Held jobs have their own column: not waiting (a worker more would not run them sooner).
        await expect(_cell(page, "limited", "held")).to_have_text("2")
        await expect(_cell(page, "limited", "waiting")).to_have_text("2")  # lim-0 and the scheduled job
        await expect(_cell(page, "email", "held")).to_have_text("0")

        # The waiting list says how many more are held back.
        await page.locator('tr[data-queue="limited"] [data-action="jobs"]').click()
        await expect(page.locator("#jobs-hint")).to_contain_text("2 more are held back by their keys' limits")

        # Cancel a waiting job; a dismissed confirmation cancels nothing.
        await page.locator('tr[data-queue="email"] [data-action="jobs"]').click()
        waiting = page.locator('#jobs-list tr[data-job="mail-wait"]')
        page.once("dialog", _dismiss)
        await waiting.locator('[data-action="cancel"]').click()
        await expect(page.locator("#jobs-list tbody tr")).to_have_count(1)
        assert (await statuses.read("mail-wait")).state is JobState.QUEUED
        page.on("dialog", _accept)
        await waiting.locator('[data-action="cancel"]').click()
        await expect(page.locator("#flash")).to_have_text("Cancelled mail-wait")
        await expect(page.locator("#jobs-empty")).to_be_visible()
        assert (await statuses.read("mail-wait")).state is JobState.CANCELLED
        # A delayed one.
        await page.locator('#jobs-tabs [data-state="delayed"]').click()
        await page.locator('#jobs-list tr[data-job="mail-later"] [data-action="cancel"]').click()
        await expect(page.locator("#flash")).to_have_text("Cancelled mail-later")
        assert (await statuses.read("mail-later")).state is JobState.CANCELLED
        # A running one: its worker is asked to stop it (the abort set names it).
        await page.locator('#jobs-tabs [data-state="active"]').click()
        await page.locator('#jobs-list tr[data-job="mail-run"] [data-action="cancel"]').click()
        await expect(page.locator("#flash")).to_have_text("Cancelling mail-run: its worker stops it")
        assert await redis.zscore("arq:abort", "mail-run") is not None
        # Completed and failed jobs have no Cancel button.
        await page.locator('#jobs-tabs [data-state="completed"]').click()
        await expect(page.locator("#jobs-total")).to_have_text("(0 completed)")
        await expect(page.locator('#jobs-list [data-action="cancel"]')).to_have_count(0)

        # A held job looked up: queued, held back, with its key; it can be cancelled from there.
        lookup = page.locator("#lookup-id")
        job = page.locator("#job")
        await lookup.fill("lim-2")
        await lookup.press("Enter")
        await expect(job.locator("[data-state]")).to_have_text("queued")
        await expect(job.locator("[data-held]")).to_have_text("held back by its key's limit", use_inner_text=True)
        await expect(job).to_contain_text("Key")
        await job.locator('[data-action="cancel"]').click()
        await expect(job.locator("[data-state]")).to_have_text("cancelled")
        await expect(_cell(page, "limited", "held")).to_have_text("1")

        # Schedules of a queue: timing, next run, last job (a link to its status), state, buttons.
        await page.locator('tr[data-queue="limited"] [data-action="schedules"]').click()
        rows = page.locator("#schedules-list tbody tr")
        await expect(rows).to_have_count(3)
        nightly = page.locator('#schedules-list tr[data-schedule="nightly"]')
        await expect(nightly).to_contain_text("cron 0 3 * * * (Europe/Berlin)")
        await expect(nightly).to_contain_text("(declared)")
        await expect(nightly.locator('[data-action="remove"]')).to_be_disabled()
        minutely = page.locator('#schedules-list tr[data-schedule="minutely"]')
        await expect(minutely).to_contain_text("every 1.0 s")
        await minutely.locator('[data-action="last-job"]').click()
        await expect(page.locator("#job")).to_contain_text(last.job_id)
        await expect(job.locator("[data-state]")).to_have_text("queued")
        bad = page.locator('#schedules-list tr[data-schedule="broken"]')
        await expect(bad.locator("[data-state]")).to_have_text("broken")
        await expect(bad.locator("td.error-cell")).to_contain_text("{'cron': '<script>window.")  # as text

        await nightly.locator('[data-action="toggle"]').click()
        await expect(page.locator("#flash")).to_have_text("Schedule nightly: paused")
        await expect(nightly.locator("[data-state]")).to_have_text("paused")
        assert (await store.get("nightly")).paused
        await nightly.locator('[data-action="toggle"]').click()
        await expect(nightly.locator("[data-state]")).to_have_text("running")
        assert not (await store.get("nightly")).paused

        await minutely.locator('[data-action="remove"]').click()
        await expect(page.locator("#flash")).to_have_text("Removed schedule minutely")
        await expect(rows).to_have_count(2)
        assert "minutely" not in {v.name for v in await store.views()}

        await page.screenshot(path=str(tmp_path / "schedules.png"), full_page=True)
        assert await page.locator("script:not([src]), #schedules img, #job b").count() == 0
        assert await page.evaluate("window.pwned") is None
        assert problems == []
    finally:
        await page.close()
        await server.close()


async def test_job_view_shows_the_log_as_text(redis: Redis, browser: Browser) -> None:
    producer = Producer(redis, SPECS)
    await producer.enqueue("email", "send_email", "a@example.com", job_id="logged")
    await pick_up(redis, SPECS["email"], "logged")
    limits = SPECS["email"].logs
    lines = [
        job_logs.entry(1_700_000_000_000, 1, "INFO", "rendering template", limits),
        job_logs.entry(1_700_000_000_500, 1, "WARNING", HOSTILE + "\nsecond line", limits),
    ]
    await job_logs.append(redis, keys.logs_key("logged"), lines, limits)
    server = await _serve(redis)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await page.goto(str(server.make_url("/dashboard")))
        await page.locator("#lookup-id").fill("logged")
        await page.locator("#lookup-id").press("Enter")
        logs = page.locator('#job pre[data-field="logs"]')
        await expect(logs).to_contain_text("try 1 INFO: rendering template")
        await expect(logs).to_contain_text("try 1 WARNING: " + HOSTILE)
        await expect(logs).to_contain_text("\n    second line")
        assert await page.locator("#job script, #job img").count() == 0
        assert await page.evaluate("window.pwned") is None
        # A job without a log says so.
        await producer.enqueue("email", "send_email", "b@example.com", job_id="quiet")
        await page.locator("#lookup-id").fill("quiet")
        await page.locator("#lookup-id").press("Enter")
        await expect(page.locator('#job pre[data-field="logs"]')).to_have_text("(no log lines)")
        assert problems == []
    finally:
        await page.close()
        await server.close()


async def test_a_slow_lookup_is_not_replaced_by_the_refresh_of_the_job_shown_before(
    redis: Redis, browser: Browser
) -> None:
    # The page refreshes a job it shows until the job settles. Asked for another, the answer for the new id
    # must win even when a refresh of the old one starts while that answer is on its way (CI saw the old,
    # still active job stay on screen: the refresh's newer request made the page drop the answer it wanted).
    producer = Producer(redis, SPECS)
    await producer.enqueue("email", "send_email", "a@example.com", job_id="busy")
    await pick_up(redis, SPECS["email"], "busy")
    await producer.enqueue("verification", "verify_document", {"doc": "x"}, job_id="done")
    await finish(redis, SPECS["verification"], "done", success=True, result={"verdict": "ok"})
    server = await _serve(redis)
    page = await browser.new_page()
    problems = _watch(page)

    async def slow(route: Route) -> None:
        await asyncio.sleep(2.5)  # more than two of the page's 1 s refreshes
        await route.continue_()

    try:
        await page.goto(str(server.make_url("/dashboard")))
        state = page.locator("#job [data-state]")
        await page.locator("#lookup-id").fill("busy")
        await page.locator("#lookup-id").press("Enter")
        await expect(state).to_have_text("active")
        await page.route("**/v1/jobs/done", slow)
        await page.locator("#lookup-id").fill("done")
        await page.locator("#lookup-id").press("Enter")
        await expect(state).to_have_text("completed", timeout=8000)
        await expect(page.locator("#job")).to_contain_text("done")
        await asyncio.sleep(1.5)  # and it stays: no refresh of "busy" comes back
        await expect(state).to_have_text("completed")
        assert problems == []
    finally:
        await page.close()
        await server.close()


async def test_charts_of_the_last_hour_and_redis_at_a_glance(redis: Redis, browser: Browser) -> None:
    from arqscale.api.dashboard_routes import sample_once

    producer = Producer(redis, SPECS)
    email = SPECS["email"]
    server = await _serve(redis)
    now = time.time()
    # Three samples a minute apart, as the API's sampler writes them: jobs arrive, a worker takes and
    # finishes some (the worker protocol's own writes, so the totals counters move as in production).
    for i in range(6):
        await producer.enqueue("email", "send_email", f"u{i}@example.com", job_id=f"chart-{i}")
    await redis.zadd(keys.QueueKeys.for_queue("email", email.queue_key).workers, {"w1": 10**15})
    assert await sample_once(server.app, now - 120) == 2
    for i in range(3):
        await pick_up(redis, email, f"chart-{i}")
        await finish(redis, email, f"chart-{i}", success=True, result=None)
    await sample_once(server.app, now - 60)
    await pick_up(redis, email, "chart-3")
    await sample_once(server.app, now - 1)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await page.goto(str(server.make_url("/")))
        await page.locator('tr[data-queue="email"] [data-action="charts"]').click()
        charts = page.locator("#charts")
        await expect(charts).to_be_visible()
        await expect(page.locator("#charts-queue")).to_have_text("email")
        counts = charts.locator('[data-chart="counts"]')
        await expect(counts.locator('[data-series="waiting"]')).to_have_text("waiting 2")
        await expect(counts.locator('[data-series="active"]')).to_have_text("active 1")
        await expect(counts.locator("polyline")).to_have_count(3)
        rates = charts.locator('[data-chart="rates"]')
        # 3 completed between the first and second sample, none since: the last rate is 0.
        await expect(rates.locator('[data-series="completed/s"]')).to_have_text("completed/s 0")
        assert await rates.locator("polyline").count() == 2
        await expect(charts.locator('[data-chart="workers"] [data-series="workers"]')).to_have_text("workers 1")
        assert page.url.endswith("#/queue/email/charts/3600")
        # The 5-minute span: the sample two minutes old is in it, and the axis says so.
        await page.locator('#charts-spans [data-span="300"]').click()
        await expect(page.locator('#charts-spans [data-span="300"]')).to_have_attribute("aria-selected", "true")
        await expect(counts.locator("text.tick").nth(2)).to_have_text("-5 min")
        assert page.url.endswith("#/queue/email/charts/300")
        await expect(counts.locator('[data-series="waiting"]')).to_have_text("waiting 2")
        await expect(page.locator("#redis")).to_contain_text("commands/s")
        await expect(page.locator("#redis")).to_contain_text("clients")
        # Another queue, with no samples: said so, not an error.
        await redis.delete("arqscale:verification:history")
        await page.locator('tr[data-queue="verification"] [data-action="charts"]').click()
        await expect(page.locator("#charts-queue")).to_have_text("verification")
        await page.locator("#charts-close").click()
        await expect(charts).to_be_hidden()
        assert problems == []
    finally:
        await page.close()
        await server.close()


async def test_job_view_arguments_and_timeline_of_tries(
    redis: Redis, browser: Browser, redis_env: dict[str, str], tmp_path: Path
) -> None:
    # The retry waits 2 s: the flag is cleared well before it, even on a loaded machine (with 0.2 s the second try
    # could fail too before the test cleared the flag, and the timeline had two failures).
    queues = {"t": {"functions": ["worker_tasks.fail_while"], "max_tries": 3, "backoff": {"delay": 2}}}
    specs = parse_queues({"queues": queues})
    flag = '<img src=x onerror="window.pwned = 3">'
    start, started = worker_starter(redis_env, tmp_path)
    await redis.set(flag, "1")
    server = await _serve(redis, specs=specs)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await start(queues, "t").ready()
        assert await redis.exists(flag) == 1, "the flag must be set before the job runs"
        await Producer(redis, specs).enqueue("t", "fail_while", flag, job_id="tl-1")
        statuses = JobStatusReader(redis, specs)

        async def retrying() -> bool:
            # Deferred for its retry: the first try has failed. (attempts >= 1 alone holds while try 1 still runs,
            # and clearing the flag then let try 1 succeed.)
            status = await statuses.read("tl-1")
            return status.state is JobState.DEFERRED and status.attempts >= 1

        await wait_until(retrying, 20, "the first try to fail")
        await redis.delete(flag)

        async def done() -> bool:
            return (await statuses.read("tl-1")).state is JobState.COMPLETED

        await wait_until(done, 20, "the second try to complete")
        await page.goto(str(server.make_url("/")))
        await page.locator("#lookup-id").fill("tl-1")
        await page.locator("#lookup-id").press("Enter")
        job = page.locator("#job")
        await expect(job.locator('[data-state="completed"]')).to_be_visible()
        await expect(job).to_contain_text(flag)  # the argument, as text
        events = job.locator('[data-field="timeline"] li')
        await expect(events.first).to_have_attribute("data-event", "waiting")
        names = [await e.get_attribute("data-event") for e in await events.all()]
        assert names == ["waiting", "active", "failed", "retrying", "active", "completed"], names
        failed = job.locator('[data-event="failed"]')
        await expect(failed).to_contain_text("try 1")
        await expect(failed).to_contain_text(f"{flag} is set")
        await expect(job.locator('[data-event="completed"]')).to_contain_text("try 2")
        await expect(job.locator('[data-event="completed"]')).to_contain_text("ran ")
        assert await page.evaluate("window.pwned") is None
        assert problems == []
    finally:
        await page.close()
        await server.close()
        stop_all(started)


async def test_read_only_token_sees_everything_and_changes_nothing(
    api_with_token: str, redis: Redis, browser: Browser
) -> None:
    await _wait_up(api_with_token)
    await Producer(redis, SPECS).enqueue("email", "send_email", "x@example.com", job_id="ro-1", defer_seconds=600)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await page.goto(api_with_token + "/")
        await page.locator("#token").fill("look-token")
        await page.locator("#token").press("Enter")
        row = page.locator('tr[data-queue="email"]')
        await expect(row).to_be_visible()
        await expect(page.locator("#read-only-note")).to_be_visible()
        for hidden in ('[data-action="toggle"]', "#pause-all", "#add-open"):
            await expect(page.locator(hidden).first).to_be_hidden()
        await row.locator('[data-action="jobs"]').click()
        await page.locator('#jobs-tabs [data-state="delayed"]').click()
        job = page.locator('#jobs-list tr[data-job="ro-1"]')
        await expect(job).to_be_visible()
        await expect(job.locator('[data-action="promote"]')).to_be_hidden()
        await expect(job.locator('[data-action="cancel"]')).to_be_hidden()
        # The server refuses it whatever the page shows, on every mutating route.
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer look-token"}) as http:
            for method, path in [
                ("POST", "/v1/queues/email/pause"),
                ("POST", "/v1/jobs/ro-1/cancel"),
                ("POST", "/v1/jobs/ro-1/promote"),
                ("POST", "/v1/queues/email/clean?state=completed&older_than_seconds=0"),
                ("DELETE", "/v1/queues/email/dead-letters?all=true"),
                ("PUT", "/v1/queues/email/schedules/x"),
            ]:
                async with http.request(method, api_with_token + path, json={}) as resp:
                    assert resp.status == 403, (method, path, resp.status)
                    assert (await resp.json())["error"] == "read_only"
            async with http.get(api_with_token + "/v1/session") as resp:
                assert (await resp.json()) == {"read_only": True}
        async with (
            aiohttp.ClientSession(headers={"Authorization": "Bearer right-token"}) as http,
            http.get(api_with_token + "/v1/session") as resp,
        ):
            assert (await resp.json()) == {"read_only": False}
        assert not await queue_control.is_paused(redis, SPECS["email"])
        assert (await JobStatusReader(redis, SPECS).read("ro-1")).state is JobState.DEFERRED
        assert problems == []
    finally:
        await page.close()


async def test_actions_promote_retry_clean_add_duplicate_pause_all_and_webhooks(redis: Redis, browser: Browser) -> None:
    producer = Producer(redis, SPECS)
    email, verification = SPECS["email"], SPECS["verification"]
    statuses = JobStatusReader(redis, SPECS)
    await producer.enqueue("email", "send_email", "later@example.com", job_id="later-1", defer_seconds=3600, priority=0)
    await producer.enqueue("email", "send_email", "done@example.com", job_id="done-1")
    await pick_up(redis, email, "done-1")
    await finish(redis, email, "done-1", success=True, result={"sent": True})
    await producer.enqueue("verification", "verify_document", {"doc": "x"}, job_id="broken-1")
    await pick_up(redis, verification, "broken-1")
    await bury(redis, verification, "broken-1", error=HOSTILE)
    hook_keys = WebhookKeys.for_queue("verification")
    for i in range(2):
        dead = DeadDelivery(
            id=f"verification:1-{i}:ops", queue="verification", endpoint="ops", event="dead", job_id="broken-1",
            body="{}", attempts=5, created_at=time.time(), last_error=HOSTILE, failed_at=time.time(),
        )  # fmt: skip
        await redis.hset(hook_keys.dead, dead.id, dead.model_dump_json())
        await redis.zadd(hook_keys.dead_index, {dead.id: int(time.time() * 1000) + i})

    server = await _serve(redis)
    page = await browser.new_page()
    page.on("dialog", _accept)
    problems = _watch(page)
    try:
        await page.goto(str(server.make_url("/")))
        email_row = page.locator('tr[data-queue="email"]')
        await email_row.locator('[data-action="jobs"]').click()
        # Promote: the delayed job is ready now, still in its band (priority 0).
        await page.locator('#jobs-tabs [data-state="delayed"]').click()
        await page.locator('#jobs-list tr[data-job="later-1"] [data-action="promote"]').click()
        await expect(page.locator("#flash")).to_contain_text("Promoted later-1")
        promoted = await statuses.read("later-1")
        assert promoted.state is JobState.QUEUED and promoted.priority == 0
        # Clean completed jobs older than 0 s: the result is gone.
        await page.locator('#jobs-tabs [data-state="completed"]').click()
        await expect(page.locator('#jobs-list tr[data-job="done-1"]')).to_be_visible()
        await page.locator("#clean-age").fill("0")
        await page.locator("#clean-form button").click()
        await expect(page.locator("#flash")).to_contain_text("Cleaned 1 completed job(s) of email")
        assert not await redis.exists(keys.result_key("done-1"))
        # Retry a failed job: back in its queue.
        await page.locator('tr[data-queue="verification"] [data-action="jobs"]').click()
        await page.locator('#jobs-tabs [data-state="failed"]').click()
        await page.locator('#jobs-list tr[data-job="broken-1"] [data-action="retry"]').click()
        await expect(page.locator("#flash")).to_contain_text("Retrying broken-1")
        assert (await statuses.read("broken-1")).state is JobState.QUEUED
        # Add a job from the form (markup in its arguments stays text), then duplicate it.
        await page.locator("#add-open").click()
        await page.locator("#add-queue").select_option("email")
        await page.locator("#add-function").fill("send_email")
        await page.locator("#add-args").fill(json.dumps([HOSTILE]))
        await page.locator("#add-id").fill("added-1")
        await page.locator("#add-id").press("Enter")
        await expect(page.locator("#job")).to_contain_text("added-1")
        await expect(page.locator("#job")).to_contain_text("<script>window.pwned = 1</script>")  # as JSON text
        await page.locator('#job [data-action="duplicate"]').click()
        await expect(page.locator("#add-args")).to_have_value(json.dumps([HOSTILE]))
        await page.locator("#add-form button[type=submit]").click()
        await expect(page.locator("#flash")).to_contain_text("Enqueued")
        waiting = await redis.zrange(email.queue_key, 0, -1)
        assert len(waiting) == 3  # later-1, added-1 and its duplicate
        # Pause and resume every queue.
        await page.locator("#pause-all").click()
        await expect(page.locator("#flash")).to_contain_text("2 queue(s) paused")
        assert await queue_control.is_paused(redis, email) and await queue_control.is_paused(redis, verification)
        await page.locator("#resume-all").click()
        await expect(page.locator("#flash")).to_contain_text("2 queue(s) resumed")
        assert not await queue_control.is_paused(redis, email)
        # Undeliverable webhooks: listed (errors as text), one retried, the rest deleted.
        await page.locator('tr[data-queue="verification"] [data-action="webhooks"]').click()
        hooks = page.locator("#webhooks-list tbody tr")
        await expect(hooks).to_have_count(2)
        await expect(hooks.first.locator(".error-cell")).to_have_text(HOSTILE)
        await hooks.first.locator('[data-action="webhook-retry"]').click()
        await expect(hooks).to_have_count(1)
        assert await redis.zcard(hook_keys.due) == 1
        await page.locator("#webhooks-purge-all").click()
        await expect(page.locator("#webhooks-empty")).to_be_visible()
        assert await redis.zcard(hook_keys.dead_index) == 0
        assert await page.evaluate("window.pwned") is None
        assert problems == []
    finally:
        await page.close()
        await server.close()


async def test_search_routes_shared_links_and_the_back_button(redis: Redis, browser: Browser) -> None:
    spec = SPECS["email"]
    arq = ArqRedis(redis.connection_pool, job_serializer=json_dumps)
    hostile_id = '<img src=x onerror="window.pwned = 4">/inv 1'
    for job_id in (hostile_id, "<img-other"):
        assert await arq.enqueue_job("send_email", "a@example.com", _job_id=job_id, _queue_name=spec.queue_key)
    producer = Producer(redis, SPECS)
    await producer.enqueue("email", "send_email", "b@example.com", job_id="inv-2", defer_seconds=600)
    await producer.enqueue("email", "send_email", "c@example.com", job_id="inv-3")
    await producer.enqueue("email", "send_email", "d@example.com", job_id="done-9")
    await pick_up(redis, spec, "done-9")
    await finish(redis, spec, "done-9", success=True, result=1)
    server = await _serve(redis)
    page = await browser.new_page()
    problems = _watch(page)
    base = str(server.make_url("/"))
    try:
        await page.goto(base)
        await expect(page.locator('tr[data-queue="email"]')).to_be_visible()
        # "/" jumps to the search; markup in a prefix is a literal prefix, and found ids are text.
        await page.keyboard.press("/")
        await expect(page.locator("#search-prefix")).to_be_focused()
        await page.keyboard.type('<img src=x onerror="')
        await page.keyboard.press("Enter")
        found = page.locator("#search-list tbody tr")
        await expect(found).to_have_count(1)
        await expect(found.first).to_have_attribute("data-job", hostile_id)
        assert "#/search?" in page.url
        # By state and function: the delayed one only; then completed.
        await page.locator("#search-prefix").fill("inv-")
        await page.locator("#search-state").select_option("delayed")
        await page.locator("#search-function").fill("send_email")
        await page.locator("#search-form button").click()
        await expect(found).to_have_count(1)
        await expect(found.first).to_have_attribute("data-job", "inv-2")
        await page.locator("#search-prefix").fill("")
        await page.locator("#search-state").select_option("completed")
        await page.locator("#search-function").fill("")
        await page.locator("#search-form button").click()
        await expect(found).to_have_count(1)
        await expect(found.first).to_have_attribute("data-job", "done-9")
        # A job opened from the results has its own URL; Back returns to the search.
        await found.first.locator('[data-action="view"]').click()
        await expect(page.locator('#job [data-state="completed"]')).to_be_visible()
        assert page.url.endswith("#/job/done-9")
        await page.locator('tr[data-queue="email"] [data-action="jobs"]').click()
        await page.locator('#jobs-tabs [data-state="delayed"]').click()
        assert page.url.endswith("#/queue/email/jobs/delayed/0")
        await page.go_back()
        await expect(page).to_have_url(base + "#/queue/email/jobs/waiting/0")
        await expect(page.locator('#jobs-tabs [data-state="waiting"]')).to_have_attribute("aria-selected", "true")
        await page.go_back()
        await page.go_back()
        await expect(page).to_have_url(base + "#/search?queue=email&state=completed")
        # A shared link opens its view in a fresh page: a queue's tab, a job with markup in its id.
        fresh = await browser.new_page()
        try:
            await fresh.goto(base + "#/queue/email/jobs/delayed/0")
            await expect(fresh.locator("#jobs")).to_be_visible()
            await expect(fresh.locator('#jobs-list tr[data-job="inv-2"]')).to_be_visible()
            await fresh.goto("about:blank")
            await fresh.goto(base + "#/job/" + quote(hostile_id, safe=""))
            await expect(fresh.locator("#job")).to_contain_text(hostile_id)
            await fresh.goto("about:blank")
            await fresh.goto(base + "#/queue/email/charts")
            await expect(fresh.locator("#charts")).to_be_visible()
            assert await fresh.evaluate("window.pwned") is None
        finally:
            await fresh.close()
        assert await page.evaluate("window.pwned") is None
        assert problems == []
    finally:
        await page.close()
        await server.close()


async def test_workers_view_shows_each_live_worker(
    redis: Redis, browser: Browser, redis_env: dict[str, str], tmp_path: Path
) -> None:
    queues = {"t": {"functions": ["worker_tasks.sleep"], "concurrency": 4, "lease_seconds": 3}}
    specs = parse_queues({"queues": queues})
    start, started = worker_starter(redis_env, tmp_path)
    server = await _serve(redis, specs=specs)
    page = await browser.new_page()
    problems = _watch(page)
    try:
        await start(queues, "t", env={"POD_NAME": "web-<b>7</b>"}).ready()
        await Producer(redis, specs).enqueue("t", "sleep", 30, job_id="long-1")
        statuses = JobStatusReader(redis, specs)

        async def running() -> bool:
            return (await statuses.read("long-1")).state is JobState.ACTIVE

        await wait_until(running, 20, "the job to start")
        second = await start(queues, "t").ready()  # idle: it stops at once when asked

        async def described() -> bool:  # both records written, the running job counted (the next heartbeat)
            listed = (await list_workers(redis, specs["t"])).workers
            return len(listed) == 2 and sorted(w.running or 0 for w in listed) == [0, 1]

        await wait_until(described, 20, "both workers' records")
        await page.goto(str(server.make_url("/")) + "#/queue/t/workers")
        rows = page.locator("#workers-list tbody tr")
        await expect(rows).to_have_count(2)
        await expect(page.locator("#workers-list")).to_contain_text("web-<b>7</b>")  # the pod name, as text
        await expect(page.locator('#workers-list td[data-col="running"]', has_text="1 of 4")).to_have_count(1)
        await expect(rows.first.locator('[data-col="heartbeat"]')).to_contain_text("ago")
        second.proc.terminate()  # a clean exit removes its record and its heartbeat
        await expect(rows).to_have_count(1, timeout=30_000)
        assert problems == []
    finally:
        await page.close()
        await server.close()
        stop_all(started)


async def test_dark_scheme_and_keyboard_use(redis: Redis, browser: Browser) -> None:
    await Producer(redis, SPECS).enqueue("email", "send_email", "a@example.com", job_id="kb-1")
    server = await _serve(redis)
    context = await browser.new_context(color_scheme="dark")
    page = await context.new_page()
    problems = _watch(page)
    try:
        await page.goto(str(server.make_url("/")))
        await expect(page.locator('tr[data-queue="email"]')).to_be_visible()
        colors = await page.evaluate(
            """() => {
              const s = (e) => getComputedStyle(e);
              return {bg: s(document.documentElement).backgroundColor, fg: s(document.body).color,
                      card: s(document.querySelector("section")).backgroundColor};
            }"""
        )
        assert colors == {"bg": "rgb(11, 15, 23)", "fg": "rgb(229, 231, 235)", "card": "rgb(21, 27, 38)"}
        # Keyboard only: Tab to the email queue's Jobs button, Enter opens the list; ids are buttons too.
        jobs_button = page.locator('tr[data-queue="email"] [data-action="jobs"]')
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await jobs_button.evaluate("b => b === document.activeElement"):
                break
        else:
            raise AssertionError("Tab never reached the Jobs button")
        await page.keyboard.press("Enter")
        view = page.locator('#jobs-list tr[data-job="kb-1"] [data-action="view"]')
        await expect(view).to_be_visible()
        await view.focus()
        await page.keyboard.press("Enter")
        await expect(page.locator('#job [data-state="queued"]')).to_be_visible()
        assert problems == []
    finally:
        await context.close()
        await server.close()
