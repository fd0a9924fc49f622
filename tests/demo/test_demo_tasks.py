"""The demo tasks called directly, as a worker would call them, with a recording progress hook."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import pytest

from arqscale.demo import tasks


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ARQSCALE_DEMO_DIR", str(tmp_path))
    monkeypatch.delenv("SMTP_HOST", raising=False)
    monkeypatch.setenv("ARQSCALE_DEMO_LATENCY", "0.01")
    return tmp_path


class Ctx(dict[str, Any]):
    def __init__(self, job_id: str, job_try: int = 1) -> None:
        super().__init__(job_id=job_id, job_try=job_try, progress=self._record)
        self.reports: list[tuple[float, str | None]] = []

    async def _record(self, percent: float, message: str | None = None) -> None:
        self.reports.append((percent, message))


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _monotonic(ctx: Ctx) -> None:
    percents = [p for p, _ in ctx.reports]
    assert percents == sorted(percents) and percents[-1] == 100


async def test_send_email_writes_an_eml_to_the_outbox(demo_dir: Path) -> None:
    ctx = Ctx("mail-1")
    result = await tasks.send_email(ctx, "ada@example.com", "Welcome", template="welcome")
    eml = demo_dir / "outbox" / "mail-1.eml"
    assert result == {"to": "ada@example.com", "delivered_to": str(eml)}
    text = _read(eml).decode()
    assert "To: ada@example.com" in text and "Subject: Welcome" in text and "welcome email" in text
    _monotonic(ctx)
    # The README's example passes only the address.
    assert (await tasks.send_email(Ctx("mail-3"), "bob@example.com"))["to"] == "bob@example.com"
    assert "Subject: Hello from arqscale" in _read(demo_dir / "outbox" / "mail-3.eml").decode()
    with pytest.raises(tasks.InvalidRecipient):
        await tasks.send_email(Ctx("mail-2"), "not-an-address", "x")


async def test_export_csv_writes_all_rows_and_reports_progress(demo_dir: Path) -> None:
    ctx = Ctx("exp/../1")  # an id with separators still lands inside exports/
    result = await tasks.export_csv(ctx, "orders", rows=600, chunk=200)
    path = Path(result["path"])
    assert path.parent == demo_dir / "exports" and result["rows"] == 600
    rows = list(csv.reader(_read(path).decode().splitlines()))
    assert rows[0] == ["order_id", "region", "amount_cents", "created_at"] and len(rows) == 601
    assert [p for p, _ in ctx.reports][:3] == [33.3, 66.7, 100.0]
    _monotonic(ctx)


async def test_resize_image_downscales_and_saves_a_ppm(demo_dir: Path) -> None:
    ctx = Ctx("img-1")
    result = await tasks.resize_image(ctx, width=64, height=32, factor=4, seed=3)
    assert (result["width"], result["height"]) == (16, 8)
    data = _read(Path(result["path"]))
    header = b"P6 16 8 255\n"
    assert data.startswith(header) and len(data) == len(header) + 16 * 8 * 3
    _monotonic(ctx)
    with pytest.raises(ValueError, match="bad size"):
        await tasks.resize_image(ctx, width=0)


def test_downscale_averages_each_block() -> None:
    pixels = [[(0, 0, 0), (10, 20, 30)], [(20, 40, 60), (30, 60, 90)]]
    assert tasks._downscale_rows(pixels, 2, 0, 1) == [[(15, 30, 45)]]


async def test_verify_document_is_flaky_and_rejects_forgeries(demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    random.seed(7)
    monkeypatch.setenv("ARQSCALE_DEMO_FLAKINESS", "0")
    ok = await tasks.verify_document(Ctx("v1"), "doc-1")
    assert ok["verdict"] == "clear"
    with pytest.raises(tasks.DocumentRejected, match="forged-9"):
        await tasks.verify_document(Ctx("v2"), "forged-9")
    monkeypatch.setenv("ARQSCALE_DEMO_FLAKINESS", "1")
    with pytest.raises(tasks.ProviderUnavailable, match="try 2"):
        await tasks.verify_document(Ctx("v3", job_try=2), "doc-3")
    # A third try always gets through, so a genuine document never dies of the provider's outages.
    assert (await tasks.verify_document(Ctx("v4", job_try=3), "doc-4"))["verdict"] == "clear"
