"""Pod deletion cost: the exact PATCH the kubernetes client sends, recorded by a local HTTPS "API server".

The patcher is built the way a pod builds it (in-cluster config: service host/port env, token and CA
files), only with the files and address pointing at the recorder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import ipaddress
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis

from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from arqscale.worker import deletion_cost
from arqscale.worker.deletion_cost import ANNOTATION, BUSY_COST, IDLE_COST
from arqscale.worker.loop import Worker
from redis_server import free_port

TOKEN = "test-service-account-token"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "apiserver.crt", tmp / "apiserver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    authorization: str
    body: Any
    at: float


@dataclass
class ApiServer:
    port: int
    ca_file: Path
    token_file: Path
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200

    def environ(self) -> dict[str, str]:
        return {
            "POD_NAME": "worker-7d9f-abcde",
            "POD_NAMESPACE": "jobs",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.port),
        }

    def patcher(self, min_interval: float, hold_seconds: float = 0.0) -> deletion_cost.DeletionCostPatcher:
        patcher = deletion_cost.from_environment(
            environ=self.environ(),
            token_file=str(self.token_file),
            cert_file=str(self.ca_file),
            min_interval=min_interval,
            hold_seconds=hold_seconds,
        )
        assert patcher is not None
        return patcher

    def costs(self) -> list[str]:
        return [r.body["metadata"]["annotations"][ANNOTATION] for r in self.requests]


@pytest.fixture
async def api_server(tmp_path: Path) -> AsyncIterator[ApiServer]:
    cert_file, key_file = self_signed(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    server = ApiServer(port=free_port(), ca_file=cert_file, token_file=token_file)

    async def record(request: web.Request) -> web.Response:
        server.requests.append(
            Recorded(
                method=request.method,
                path=request.path_qs,
                content_type=request.headers.get("Content-Type", ""),
                authorization=request.headers.get("Authorization", ""),
                body=json.loads(await request.read()),
                at=time.monotonic(),
            )
        )
        # No keep-alive: an idle TLS connection left open at teardown would outlive the test's loop.
        close = {"Connection": "close"}
        if server.status != 200:
            return web.json_response({"kind": "Status", "code": server.status}, status=server.status, headers=close)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": request.match_info["name"]}}
        return web.json_response(pod, headers=close)

    app = web.Application()
    app.router.add_route("*", "/api/v1/namespaces/{namespace}/pods/{name}", record)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert_file, key_file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port, ssl_context=tls).start()
    yield server
    await runner.cleanup()


async def eventually(check: Callable[[], bool] | Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value if isinstance(value, bool) else await value:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_patches_own_pod_on_transitions_only_and_rate_limited(api_server: ApiServer) -> None:
    patcher = api_server.patcher(min_interval=0.4)
    try:
        patcher.set_busy(True)
        await eventually(lambda: len(api_server.requests) == 1)
        first = api_server.requests[0]
        assert first.method == "PATCH"
        assert first.path == "/api/v1/namespaces/jobs/pods/worker-7d9f-abcde"
        assert first.content_type == "application/merge-patch+json"
        scheme, token = first.authorization.split(" ", 1)
        assert scheme.lower() == "bearer" and token == TOKEN  # the kubernetes client writes "bearer"
        assert first.body == {"metadata": {"annotations": {ANNOTATION: str(BUSY_COST)}}}
        # Same state again: nothing. Idle then busy again within the interval: it flapped back, nothing.
        patcher.set_busy(True)
        patcher.set_busy(False)
        patcher.set_busy(True)
        await asyncio.sleep(0.6)
        assert len(api_server.requests) == 1
        # A real transition inside the interval waits for the interval, then carries the latest state.
        patcher.set_busy(False)
        await eventually(lambda: len(api_server.requests) == 2)
        patcher.set_busy(True)
        patcher.set_busy(False)
        patcher.set_busy(True)
        await eventually(lambda: len(api_server.requests) == 3)
        await asyncio.sleep(0.5)
        assert api_server.costs() == [str(BUSY_COST), str(IDLE_COST), str(BUSY_COST)]
        assert api_server.requests[2].at - api_server.requests[1].at >= 0.39
        assert patcher.patches == 3
    finally:
        await patcher.close()


async def test_hysteresis_a_state_is_sent_only_after_it_held(api_server: ApiServer) -> None:
    """Busy/idle flips faster than the hold time never reach the API server; a held state does, once."""
    patcher = api_server.patcher(min_interval=0.5, hold_seconds=0.3)
    try:
        started = time.monotonic()
        patcher.set_busy(True)
        # Flapping every 0.1 s for 1 s (a worker with short jobs): the state never holds 0.3 s.
        for i in range(10):
            await asyncio.sleep(0.1)
            patcher.set_busy(i % 2 == 0)
        assert api_server.requests == []
        # Idle from now on: one patch, no sooner than the hold time after the last flip.
        last_flip = time.monotonic()
        patcher.set_busy(False)
        await eventually(lambda: len(api_server.requests) == 1)
        assert api_server.requests[0].at - last_flip >= 0.29
        assert api_server.costs() == [str(IDLE_COST)]
        assert api_server.requests[0].at - started >= 1.2
        # Repeating the sent state sends nothing; a new state that holds goes out after the interval.
        patcher.set_busy(False)
        patcher.set_busy(True)
        await eventually(lambda: len(api_server.requests) == 2)
        assert api_server.requests[1].at - api_server.requests[0].at >= 0.49
        await asyncio.sleep(0.6)
        assert api_server.costs() == [str(IDLE_COST), str(BUSY_COST)] and patcher.patches == 2
    finally:
        await patcher.close()


def test_defaults_are_calm() -> None:
    """The defaults a pod runs with: 15 s of hold, one patch per 30 s at most."""
    signature = inspect.signature(deletion_cost.from_environment)
    assert signature.parameters["hold_seconds"].default == 15.0
    assert signature.parameters["min_interval"].default == 30.0


async def test_a_refused_patch_warns_once_and_is_retried(
    api_server: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    api_server.status = 403  # RBAC without patch on pods
    patcher = api_server.patcher(min_interval=0.1)
    try:
        with caplog.at_level(logging.WARNING, logger="arqscale.worker.loop.deletion_cost"):
            patcher.set_busy(True)
            await eventually(lambda: len(api_server.requests) >= 3)
        assert patcher.sent is None
        warnings = [r for r in caplog.records if "cannot patch pod jobs/worker-7d9f-abcde" in r.getMessage()]
        assert len(warnings) == 1
        api_server.status = 200
        await eventually(lambda: patcher.sent is True)
    finally:
        await patcher.close()


def test_outside_a_cluster_it_switches_off_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="arqscale.worker.loop.deletion_cost"):
        assert deletion_cost.from_environment(environ={}) is None
        no_service = {"POD_NAME": "w", "POD_NAMESPACE": "jobs"}
        missing = str(tmp_path / "missing")
        assert deletion_cost.from_environment(environ=no_service, token_file=missing, cert_file=missing) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_worker_marks_its_pod_busy_while_jobs_run(api_server: ApiServer, redis: Redis) -> None:
    spec = parse_queues(
        {"queues": {"q": {"functions": ["worker_tasks.sleep"], "lease_seconds": 1, "poll_interval": 0.1}}}
    )["q"]
    patcher = api_server.patcher(min_interval=0.05)
    worker = Worker(spec, redis, deletion_cost=patcher)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: api_server.costs() == [str(IDLE_COST)])  # idle at start
        await Producer(redis, {"q": spec}).enqueue("q", "sleep", 0.4)
        await eventually(lambda: api_server.costs() == [str(IDLE_COST), str(BUSY_COST)])
        await eventually(lambda: api_server.costs() == [str(IDLE_COST), str(BUSY_COST), str(IDLE_COST)])
    finally:
        worker.request_drain()
        await asyncio.wait_for(task, 5)
        await patcher.close()
