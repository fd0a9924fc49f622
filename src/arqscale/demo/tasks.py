"""Demo tasks modelled on the workloads our users run: email, CSV exports, image resizing, and
document verification against a slow, flaky provider.

Each is an ordinary arq task (``async def f(ctx, ...)``) that reports progress through
``ctx["progress"]``. Files go under ``ARQSCALE_DEMO_DIR`` (default ``./.arqscale/demo``).
The verification provider fails now and then (the worker retries with backoff) and always rejects
documents whose id starts with ``forged``, so those end in the dead-letter store.
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

Ctx = dict[str, Any]


def demo_dir() -> Path:
    return Path(os.environ.get("ARQSCALE_DEMO_DIR", "./.arqscale/demo"))


def _out(sub: str) -> Path:
    path = demo_dir() / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe(name: str) -> str:
    """A job id or report name as a file name: no separators, no leading dots."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
    return cleaned[:100] or "job"


async def _progress(ctx: Ctx, percent: float, message: str | None = None) -> None:
    # Tasks stay callable outside a worker (tests, a REPL) where ctx has no progress hook.
    report = ctx.get("progress")
    if report is not None:
        await report(percent, message)


# ---- email -------------------------------------------------------------------------------------


class InvalidRecipient(ValueError):
    """A permanent failure: retrying will not make the address valid."""


def _smtp_send(message: EmailMessage) -> None:
    host = os.environ["SMTP_HOST"]
    port = int(os.environ.get("SMTP_PORT", "587"))
    with smtplib.SMTP(host, port, timeout=20) as smtp:
        if os.environ.get("SMTP_STARTTLS", "true").lower() not in ("0", "false", "no"):
            smtp.starttls()
        user = os.environ.get("SMTP_USER")
        if user:
            smtp.login(user, os.environ.get("SMTP_PASSWORD", ""))
        smtp.send_message(message)


async def send_email(
    ctx: Ctx, to: str, subject: str = "Hello from arqscale", body: str = "", template: str | None = None
) -> dict[str, Any]:
    """Render and send one email: over SMTP when ``SMTP_HOST`` is set, else into ``<demo dir>/outbox``."""
    if "@" not in to or to.startswith("@") or to.endswith("@"):
        raise InvalidRecipient(f"not an email address: {to!r}")
    message = EmailMessage()
    message["From"] = os.environ.get("SMTP_FROM", "arqscale-demo@localhost")
    message["To"] = to
    message["Subject"] = subject
    message["X-Arqscale-Job"] = str(ctx.get("job_id", ""))
    text = body or f"Hello {to.split('@')[0]},\n\nThis is the {template or 'default'} email.\n"
    message.set_content(text)
    await _progress(ctx, 50, "rendered")
    if os.environ.get("SMTP_HOST"):
        await asyncio.to_thread(_smtp_send, message)
        where = f"smtp://{os.environ['SMTP_HOST']}"
    else:
        await asyncio.sleep(random.uniform(0.01, 0.05))  # a mail API's round trip
        path = _out("outbox") / f"{_safe(str(ctx.get('job_id', time.time_ns())))}.eml"
        path.write_bytes(bytes(message))
        where = str(path)
    await _progress(ctx, 100, "sent")
    return {"to": to, "delivered_to": where}


# ---- CSV exports -------------------------------------------------------------------------------

_REGIONS = ("eu-west", "us-east", "ap-south", "sa-east")


async def export_csv(ctx: Ctx, report: str, rows: int = 2000, chunk: int = 250) -> dict[str, Any]:
    """Write a report of ``rows`` rows in chunks, as a paginated database export would, with progress."""
    if rows < 0 or chunk < 1:
        raise ValueError("rows must be >= 0 and chunk >= 1")
    rng = random.Random(f"{report}:{rows}")
    path = _out("exports") / f"{_safe(report)}-{_safe(str(ctx.get('job_id', 'local')))}.csv"
    tmp = path.with_suffix(".csv.part")
    written = 0
    with tmp.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["order_id", "region", "amount_cents", "created_at"])
        while written < rows:
            n = min(chunk, rows - written)
            for i in range(written, written + n):
                out.writerow([f"ord-{i:07d}", rng.choice(_REGIONS), rng.randint(100, 500_000), 1_700_000_000 + i * 37])
            written += n
            await asyncio.sleep(0.05)  # the next page of the query
            await _progress(ctx, round(100 * written / rows, 1) if rows else 100, f"{written}/{rows} rows")
    tmp.replace(path)  # readers never see a half-written export
    await _progress(ctx, 100, "done")
    return {"path": str(path), "rows": written}


# ---- image processing ---------------------------------------------------------------------------


def _pixels(width: int, height: int, seed: int) -> list[list[tuple[int, int, int]]]:
    """A synthetic photo: gradients with noise, so the downscale has real work to do."""
    rng = random.Random(seed)
    return [
        [((x * 255) // width, (y * 255) // height, (x * y + rng.randint(0, 63)) % 256) for x in range(width)]
        for y in range(height)
    ]


def _downscale_rows(
    pixels: list[list[tuple[int, int, int]]], factor: int, y0: int, y1: int
) -> list[list[tuple[int, int, int]]]:
    """Box-filter rows ``y0..y1`` of the output: each output pixel averages a factor x factor block."""
    out = []
    area = factor * factor
    width = len(pixels[0]) // factor
    for oy in range(y0, y1):
        block_rows = pixels[oy * factor : (oy + 1) * factor]
        row = []
        for ox in range(width):
            r = g = b = 0
            for src in block_rows:
                for pr, pg, pb in src[ox * factor : (ox + 1) * factor]:
                    r += pr
                    g += pg
                    b += pb
            row.append((r // area, g // area, b // area))
        out.append(row)
    return out


async def resize_image(ctx: Ctx, width: int = 512, height: int = 512, factor: int = 4, seed: int = 0) -> dict[str, Any]:
    """Generate a ``width x height`` image, downscale it by ``factor`` and save it as a PPM file."""
    if not (1 <= width <= 4096 and 1 <= height <= 4096 and 1 <= factor <= min(width, height)):
        raise ValueError(f"bad size {width}x{height} / {factor}")
    # CPU work runs in a thread so the worker's event loop (heartbeats, other jobs) stays responsive.
    pixels = await asyncio.to_thread(_pixels, width, height, seed)
    await _progress(ctx, 20, "decoded")
    out_h, out_w = height // factor, width // factor
    result: list[list[tuple[int, int, int]]] = []
    step = max(1, out_h // 4)
    for y0 in range(0, out_h, step):
        y1 = min(out_h, y0 + step)
        result += await asyncio.to_thread(_downscale_rows, pixels, factor, y0, y1)
        await _progress(ctx, 20 + 70 * y1 / max(out_h, 1), f"resized {y1}/{out_h} rows")
    path = _out("images") / f"{_safe(str(ctx.get('job_id', 'local')))}.ppm"
    data = bytearray(f"P6 {out_w} {out_h} 255\n".encode())
    for row in result:
        for px in row:
            data.extend(px)
    path.write_bytes(bytes(data))
    await _progress(ctx, 100, "saved")
    return {"path": str(path), "width": out_w, "height": out_h}


# ---- verification against a flaky provider -----------------------------------------------------


class ProviderUnavailable(RuntimeError):
    """The provider timed out or answered 503: worth a retry."""


class DocumentRejected(RuntimeError):
    """The provider looked at the document and said no: retries will not change that."""


_RELIABLE_FROM_TRY = 3


def _latency() -> float:
    return random.uniform(0.1, 0.8) * float(os.environ.get("ARQSCALE_DEMO_LATENCY", "1"))


async def verify_document(ctx: Ctx, document_id: str, kind: str = "passport") -> dict[str, Any]:
    """Upload a document to a (simulated) KYC provider and wait for its verdict.

    About a quarter of the first and second tries fail with ``ProviderUnavailable`` (the worker retries with
    backoff); documents whose id starts with ``forged`` are always rejected and end in the dead-letter store.
    """
    await _progress(ctx, 10, "uploading")
    await asyncio.sleep(_latency())
    # The provider's outages are short: a third try always reaches it. Were every try flaky, one genuine
    # document in 64 would die after its three tries (the queue's max_tries), and the demo's closing count
    # of dead letters, which it and its tests read as "the forged ones", would change from run to run.
    flaky = int(ctx.get("job_try", 1)) < _RELIABLE_FROM_TRY
    if flaky and random.random() < float(os.environ.get("ARQSCALE_DEMO_FLAKINESS", "0.25")):
        raise ProviderUnavailable(f"provider timed out verifying {document_id} (try {ctx.get('job_try', 1)})")
    await _progress(ctx, 60, "provider checking")
    await asyncio.sleep(_latency())
    if document_id.startswith("forged"):
        raise DocumentRejected(f"{kind} {document_id}: security features do not match")
    await _progress(ctx, 100, "verified")
    return {"document_id": document_id, "kind": kind, "verdict": "clear", "score": round(random.uniform(0.8, 1), 3)}
