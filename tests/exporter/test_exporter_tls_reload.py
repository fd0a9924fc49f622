"""Certificates that change under a running exporter, the front-proxy CA sidecar, and namespace scoping.

Everything here runs real servers on loopback: the exporter (HTTPS, real TLS handshakes), a real
Redis, and a local HTTPS server standing in for the kube-apiserver's ConfigMap endpoint, which the
sidecar module reads in a real subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from redis.asyncio import Redis

from arqscale.exporter.external_metrics import BASE
from arqscale.exporter.tls_certs import Issued, issue
from exporter_support import get, running_exporter, seed_every_state
from redis_server import free_port


def waiting_email(namespace: str) -> str:
    return f"{BASE}/namespaces/{namespace}/bullmq_queue_waiting?labelSelector=queue%3Demail"


def server_pair(tmp: Path, ca: Issued) -> tuple[Path, Path]:
    return issue("arqscale-exporter", issuer=ca, hostnames=["127.0.0.1"]).write(tmp / "tls.crt", tmp / "tls.key")


def trusting(ca: Issued, tmp: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    path = tmp / f"trust-{ca.cert.serial_number}.pem"
    path.write_bytes(ca.cert_pem())
    ctx = ssl.create_default_context(cafile=str(path))
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    return ctx


def no_verify(client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    return ctx


def replace_file(path: Path, data: bytes) -> None:
    """As the kubelet updates a mounted Secret: the new bytes appear at once, never half a file."""
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def eventually(check: Callable[[], object], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if await check():  # type: ignore[misc]
                return
        except (aiohttp.ClientError, ssl.SSLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def served_certificate(port: int) -> x509.Certificate:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=no_verify())
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


async def test_a_renewed_serving_certificate_is_served_without_a_restart(redis_url: str, tmp_path: Path) -> None:
    old_ca, new_ca = issue("old-ca", is_ca=True), issue("new-ca", is_ca=True)
    cert, key = server_pair(tmp_path, old_ca)
    async with running_exporter(redis_url, cert_file=cert, key_file=key, tls_reload_seconds=0.2) as exp:
        url = f"https://127.0.0.1:{exp.api_port}/apis"
        status, _ = await get(url, ssl=trusting(old_ca, tmp_path))
        assert status == 200
        # A client that already trusts only the new CA (the APIService's new caBundle) is refused ...
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(url, ssl=trusting(new_ca, tmp_path))
        # ... until the Secret's files change under the running process.
        renewed = issue("arqscale-exporter", issuer=new_ca, hostnames=["127.0.0.1"])
        replace_file(key, renewed.key_pem())
        replace_file(cert, renewed.cert_pem())

        async def new_pair_served() -> bool:
            status, _ = await get(url, ssl=trusting(new_ca, tmp_path))
            return status == 200

        await eventually(new_pair_served)
        assert (await served_certificate(exp.api_port)).serial_number == renewed.cert.serial_number
        assert exp.tls is not None and exp.tls.reloads == 1
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(url, ssl=trusting(old_ca, tmp_path))


async def test_a_broken_update_keeps_the_last_good_pair(redis_url: str, tmp_path: Path) -> None:
    ca = issue("ca", is_ca=True)
    cert, key = server_pair(tmp_path, ca)
    async with running_exporter(redis_url, cert_file=cert, key_file=key, tls_reload_seconds=0.1) as exp:
        before = (await served_certificate(exp.api_port)).serial_number
        # Only the certificate was replaced: it does not match the key, so nothing changes.
        other = issue("arqscale-exporter", issuer=ca, hostnames=["127.0.0.1"])
        replace_file(cert, other.cert_pem())
        await asyncio.sleep(0.5)
        assert exp.tls is not None and exp.tls.reloads == 0
        assert (await served_certificate(exp.api_port)).serial_number == before
        status, _ = await get(f"https://127.0.0.1:{exp.api_port}/apis", ssl=trusting(ca, tmp_path))
        assert status == 200
        # The key follows: now the pair loads and is served.
        replace_file(key, other.key_pem())

        async def reloaded() -> bool:
            return (await served_certificate(exp.api_port)).serial_number == other.cert.serial_number

        await eventually(reloaded)


async def test_a_rotated_front_proxy_ca_is_followed(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    await seed_every_state(redis)
    old_ca, new_ca = issue("front-proxy-ca", is_ca=True), issue("front-proxy-ca-2", is_ca=True)
    old_client = issue("front-proxy-client", issuer=old_ca, client=True).write(tmp_path / "o.crt", tmp_path / "o.key")
    new_client = issue("front-proxy-client", issuer=new_ca, client=True).write(tmp_path / "n.crt", tmp_path / "n.key")
    ca_file = tmp_path / "front-proxy-ca.crt"
    ca_file.write_bytes(old_ca.cert_pem())
    async with running_exporter(redis_url, client_ca_file=ca_file, tls_reload_seconds=0.2) as exp:
        url = f"https://127.0.0.1:{exp.api_port}{waiting_email('default')}"
        status, body = await get(url, ssl=no_verify(old_client))
        assert status == 200 and json.loads(body)["items"][0]["value"] == "3"
        with pytest.raises(aiohttp.ClientError):
            await get(url, ssl=no_verify(new_client))
        replace_file(ca_file, new_ca.cert_pem())

        async def new_ca_trusted() -> bool:
            status, _ = await get(url, ssl=no_verify(new_client))
            return status == 200

        await eventually(new_ca_trusted)
        # The old CA is gone from the trust store, not added to: its certificates fail the handshake.
        with pytest.raises(aiohttp.ClientError):
            await get(url, ssl=no_verify(old_client))
        # Still CERT_OPTIONAL after the switch: probes without a certificate, API calls refused.
        status, _ = await get(f"https://127.0.0.1:{exp.api_port}/livez", ssl=no_verify())
        assert status == 200
        status, _ = await get(url, ssl=no_verify())
        assert status == 401


async def test_only_the_served_namespaces_get_counts(redis: Redis, redis_url: str) -> None:
    """Two releases with an `email` queue each: one exporter must not answer for the other's namespace."""
    await seed_every_state(redis)
    async with running_exporter(redis_url, namespaces=frozenset({"jobs"})) as exp:
        root = f"https://127.0.0.1:{exp.api_port}"
        status, body = await get(root + waiting_email("jobs"), ssl=no_verify())
        assert status == 200
        assert [(i["metricLabels"]["queue"], i["value"]) for i in json.loads(body)["items"]] == [("email", "3")]
        status, body = await get(root + waiting_email("other-team"), ssl=no_verify())
        answer = json.loads(body)
        assert status == 404 and answer["kind"] == "Status" and "items" not in answer
        assert "not served for namespace 'other-team'" in answer["message"] and "jobs" in answer["message"]
        # Discovery stays cluster-wide: the API server must see the group as available.
        status, body = await get(root + BASE, ssl=no_verify())
        assert status == 200 and json.loads(body)["kind"] == "APIResourceList"
    async with running_exporter(redis_url) as exp:  # no setting: every namespace (local use, tests)
        status, _ = await get(f"https://127.0.0.1:{exp.api_port}{waiting_email('other-team')}", ssl=no_verify())
        assert status == 200


# --- the front-proxy CA sidecar (python -m arqscale.exporter.front_proxy_ca) --------------------------


@dataclass
class FakeApiServer:
    """A local HTTPS server answering the one GET the sidecar makes, recording the tokens it sent."""

    port: int
    ca_file: Path
    configmap: dict[str, str]
    tokens: list[str] = field(default_factory=list)
    status: int = 200


@pytest.fixture
async def apiserver(tmp_path: Path) -> AsyncIterator[FakeApiServer]:
    ca = issue("kubernetes-ca", is_ca=True)
    cert, key = issue("kube-apiserver", issuer=ca, hostnames=["127.0.0.1"]).write(
        tmp_path / "apiserver.crt", tmp_path / "apiserver.key"
    )
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "ca.crt").write_bytes(ca.cert_pem())
    (sa / "token").write_text("token-1")
    server = FakeApiServer(port=free_port(), ca_file=sa / "ca.crt", configmap={})

    async def configmap(request: web.Request) -> web.Response:
        server.tokens.append(request.headers.get("Authorization", ""))
        if server.status != 200:
            return web.json_response({"kind": "Status", "code": server.status}, status=server.status)
        return web.json_response({"kind": "ConfigMap", "data": server.configmap})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication", configmap)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    await web.TCPSite(runner, "127.0.0.1", server.port, ssl_context=ctx).start()
    yield server
    await runner.cleanup()


def sidecar(server: FakeApiServer, out: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "arqscale.exporter.front_proxy_ca", "--out", str(out),
        "--service-account-dir", str(server.ca_file.parent), *args,
    ]  # fmt: skip


def sidecar_env(server: FakeApiServer) -> dict[str, str]:
    return {**os.environ, "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.port)}


async def run(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_init_copy_and_sidecar_follow_the_configmap(apiserver: FakeApiServer, tmp_path: Path) -> None:
    first, second = issue("fp-1", is_ca=True).cert_pem().decode(), issue("fp-2", is_ca=True).cert_pem().decode()
    out = tmp_path / "front-proxy" / "ca.crt"
    out.parent.mkdir()
    env = sidecar_env(apiserver)
    # The init container: missing key -> a clear failure and no file.
    code, err = await run(sidecar(apiserver, out, "--once"), env)
    assert code == 1 and "has no requestheader-client-ca-file" in err and not out.exists()
    apiserver.configmap = {"requestheader-client-ca-file": first}
    code, err = await run(sidecar(apiserver, out, "--once"), env)
    assert code == 0, err
    assert out.read_text() == first and apiserver.tokens[-1] == "Bearer token-1"
    # The sidecar: a rotation in the ConfigMap reaches the file; a rotated token is read again.
    proc = await asyncio.create_subprocess_exec(*sidecar(apiserver, out, "--interval", "0.1"), env=env)
    try:
        (apiserver.ca_file.parent / "token").write_text("token-2")
        apiserver.configmap = {"requestheader-client-ca-file": second}
        deadline = time.monotonic() + 10
        while out.read_text() != second:
            assert time.monotonic() < deadline, "the sidecar did not follow the rotation"
            await asyncio.sleep(0.05)
        assert apiserver.tokens[-1] == "Bearer token-2"
        # The API server refuses for a while: the last good CA stays in place.
        apiserver.status = 403
        seen = len(apiserver.tokens)
        while len(apiserver.tokens) < seen + 3:
            assert time.monotonic() < deadline + 10
            await asyncio.sleep(0.05)
        assert out.read_text() == second and proc.returncode is None
        proc.terminate()  # SIGTERM ends it at once (it is PID 1 of its container)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sidecar_says_what_rbac_is_missing(apiserver: FakeApiServer, tmp_path: Path) -> None:
    apiserver.status = 403
    code, err = await run(sidecar(apiserver, tmp_path / "ca.crt", "--once"), sidecar_env(apiserver))
    assert code == 1 and "HTTP 403" in err and "extension-apiserver-authentication-reader" in err
    code, err = await run(
        sidecar(apiserver, tmp_path / "ca.crt", "--once"),
        {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
    )
    assert code == 2 and "not running in a pod" in err


def test_the_sidecar_imports_no_kubernetes_client() -> None:
    """The sidecar stays small: no Kubernetes client library (checked in a fresh interpreter)."""
    code = (
        "import sys, arqscale.exporter.front_proxy_ca as m; "
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('kubernetes', 'aiohttp')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
