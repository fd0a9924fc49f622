"""The worker's one HTTP port: ``/livez``, ``/readyz`` and ``/metrics``, served on the worker's own loop.

Serving the probes from the worker's event loop is deliberate: when a task blocks the loop, /livez
cannot answer, the kubelet's probe times out and the pod is restarted. A probe served from a
thread would keep answering and hide the problem.

Three fixed GET routes need no web framework: this is a minimal HTTP/1.1 server on ``asyncio.start_server``.
aiohttp cost the worker about a third of its cold start (importing it builds SSL contexts and loads its client;
bench/cold_start.py), which an autoscaler's scale-up waits for. Requests are read with a size cap and a
timeout; keep-alive is honoured (Prometheus reuses its connection), anything else is answered and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable
from dataclasses import dataclass

from arqscale.core.health import Health
from arqscale.worker.metrics import WorkerMetrics

__all__ = ["Health", "build_app", "listening_port", "start_server"]


# A handler returns status, content type and body.
Handler = Callable[[], tuple[int, str, bytes]]
MAX_REQUEST_BYTES = 8192  # request line and headers; the probes take no body
READ_TIMEOUT_S = 30.0  # an idle keep-alive connection, or a client that never finishes its request
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_TEXT = "text/plain; charset=utf-8"


@dataclass
class ProbeApp:
    """The routes: path -> handler."""

    routes: dict[str, Handler]


def build_app(health: Health, metrics: WorkerMetrics) -> ProbeApp:
    def livez() -> tuple[int, str, bytes]:
        ok, why = health.live()
        return (200 if ok else 503), _TEXT, (why + "\n").encode()

    def readyz() -> tuple[int, str, bytes]:
        ok, why = health.ready()
        return (200 if ok else 503), _TEXT, (why + "\n").encode()

    def metrics_handler() -> tuple[int, str, bytes]:
        # Imported on the first scrape, if that comes before the worker loads its metrics (worker/metrics.py).
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)

    return ProbeApp({"/livez": livez, "/readyz": readyz, "/metrics": metrics_handler})


def _response(status: int, content_type: str, body: bytes, *, head: bool, keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: " + ("keep-alive" if keep_alive else "close"),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


async def _serve_connection(app: ProbeApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            head_lines = raw.decode("latin-1").split("\r\n")
            parts = head_lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                writer.write(_response(400, _TEXT, b"bad request\n", head=False, keep_alive=False))
                await writer.drain()
                return
            method, target, version = parts
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head_lines[1:] if h)}
            if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
                keep_alive = False  # a body we do not read: answer, then close rather than misread it
            else:
                connection = headers.get("connection", "").lower()
                keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
            handler = app.routes.get(target.split("?", 1)[0])
            if method not in ("GET", "HEAD"):
                status, content_type, body = 405, _TEXT, b"method not allowed\n"
            elif handler is None:
                status, content_type, body = 404, _TEXT, b"not found\n"
            else:
                status, content_type, body = handler()
            writer.write(_response(status, content_type, body, head=method == "HEAD", keep_alive=keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except ConnectionError:
        return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class ProbeServer:
    """A listening probe server; ``cleanup()`` stops it."""

    def __init__(self, server: asyncio.Server) -> None:
        self.server = server

    async def cleanup(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):  # connections still open are closed with the loop
            await asyncio.wait_for(self.server.wait_closed(), 1.0)


async def start_server(app: ProbeApp, host: str, port: int, *, any_port_if_taken: bool = False) -> ProbeServer:
    """Serve ``app`` on ``port``, or on a free port when that one is taken and ``any_port_if_taken``."""
    # No access log: kubelet probes every few seconds would drown the job log lines.

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(app, reader, writer)

    try:
        server = await asyncio.start_server(connected, host, port, limit=MAX_REQUEST_BYTES)
    except OSError as exc:
        if not any_port_if_taken or exc.errno != errno.EADDRINUSE:
            raise
        server = await asyncio.start_server(connected, host, 0, limit=MAX_REQUEST_BYTES)
    return ProbeServer(server)


def listening_port(runner: ProbeServer) -> int | None:
    """The port ``runner`` listens on (not the one asked for when that was taken or 0)."""
    for sock in runner.server.sockets:
        address = sock.getsockname()
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
