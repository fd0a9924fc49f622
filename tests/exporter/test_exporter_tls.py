"""The External Metrics API over TLS: the real kubectl as a client, and client-CA enforcement."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import ssl
import tempfile
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from redis.asyncio import Redis

from arqscale.exporter.external_metrics import BASE
from arqscale.exporter.tls_certs import Issued, TLSConfigError, issue, serving_pair
from exporter_support import get, kubectl, running_exporter, seed_every_state

# The request of the issue, kept exactly: labelSelector=queue%3Demail.
WAITING_EMAIL = f"{BASE}/namespaces/default/bullmq_queue_waiting?labelSelector=queue%3Demail"
# kubectl prompts for a username when its kubeconfig user has no credentials at all (and reads EOF in a
# test), so the user carries a dummy token, as any real kubeconfig has credentials. The API ignores
# it: the aggregation layer authenticates by client certificate. Server and TLS options still come
# from the command line, as in the issue.
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: not-used}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


async def run_kubectl(*args: str) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as home:
        config = Path(home) / "config"
        config.write_text(KUBECONFIG)
        env = {**os.environ, "KUBECONFIG": str(config), "HOME": home}
        proc = await asyncio.create_subprocess_exec(
            str(kubectl()), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def kubectl_binary() -> Path:
    # Fetched before the exporter starts, so a first-time download does not eat into request timeouts.
    return kubectl()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A request-header client CA, a front-proxy client cert it signed, and one from a stranger CA."""
    ca = issue("front-proxy-ca", is_ca=True)
    stranger_ca = issue("someone-else", is_ca=True)
    files: dict[str, Path] = {"ca": tmp_path / "ca.crt"}
    files["ca"].write_bytes(ca.cert_pem())

    def client(name: str, cn: str, issuer: Issued) -> None:
        files[f"{name}.crt"], files[f"{name}.key"] = issue(cn, issuer=issuer, client=True).write(
            tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        )

    client("proxy", "front-proxy-client", ca)
    client("other-cn", "mallory", ca)
    client("stranger", "front-proxy-client", stranger_ca)
    return files


def client_ssl(cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's pair is self-signed in these tests
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def test_kubectl_get_raw(redis: Redis, redis_url: str, kubectl_binary: Path) -> None:
    await seed_every_state(redis)
    async with running_exporter(redis_url) as exp:
        server = f"https://127.0.0.1:{exp.api_port}"
        code, out, err = await run_kubectl(
            "get", "--raw", WAITING_EMAIL, "--server", server, "--insecure-skip-tls-verify"
        )
        assert code == 0, err
        body = json.loads(out)
        assert body["kind"] == "ExternalMetricValueList"
        assert [(i["metricLabels"]["queue"], i["value"]) for i in body["items"]] == [("email", "3")]
        # A typo in the selector reaches the user as kubectl prints Kubernetes errors.
        code, out, err = await run_kubectl(
            "get", "--raw", WAITING_EMAIL.replace("email", "emial"), "--server", server, "--insecure-skip-tls-verify"
        )
        assert code != 0
        assert "NotFound" in err and "known queues: email, image_processing, held, idle" in err, err
        code, out, err = await run_kubectl(
            "get", "--raw", "/apis/external.metrics.k8s.io/v1beta1", "--server", server, "--insecure-skip-tls-verify"
        )
        assert code == 0 and json.loads(out)["kind"] == "APIResourceList", err


async def test_client_ca_is_enforced(redis: Redis, redis_url: str, pki: dict[str, Path], kubectl_binary: Path) -> None:
    await seed_every_state(redis)
    async with running_exporter(redis_url, client_ca_file=pki["ca"], allowed_names="front-proxy-client") as exp:
        root = f"https://127.0.0.1:{exp.api_port}"
        url = root + WAITING_EMAIL
        # No client certificate: refused with a Status naming what is missing.
        status, body = await get(url, ssl=client_ssl())
        assert status == 401
        assert "client certificate signed by the request-header client CA is required" in json.loads(body)["message"]
        # The front-proxy certificate signed by the configured CA: served.
        status, body = await get(url, ssl=client_ssl(pki["proxy.crt"], pki["proxy.key"]))
        assert status == 200 and json.loads(body)["items"][0]["value"] == "3"
        # Signed by the CA, but a common name outside the allowed list.
        status, body = await get(url, ssl=client_ssl(pki["other-cn.crt"], pki["other-cn.key"]))
        assert status == 401 and "'mallory' is not among the allowed names" in json.loads(body)["message"]
        # Signed by another CA: the TLS handshake itself fails.
        with pytest.raises(aiohttp.ClientError):
            await get(url, ssl=client_ssl(pki["stranger.crt"], pki["stranger.key"]))
        # Probes need no certificate (kubelet has none).
        status, _ = await get(root + "/livez", ssl=client_ssl())
        assert status == 200
        # The real kubectl, presenting the front-proxy certificate as the kube-apiserver does.
        code, out, err = await run_kubectl(
            "get", "--raw", WAITING_EMAIL, "--server", root, "--insecure-skip-tls-verify",
            "--client-certificate", str(pki["proxy.crt"]), "--client-key", str(pki["proxy.key"]),
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["items"][0]["value"] == "3"
        code, _, err = await run_kubectl("get", "--raw", WAITING_EMAIL, "--server", root, "--insecure-skip-tls-verify")
        assert code != 0 and "a client certificate signed by the request-header client CA is required" in err, err


async def test_any_ca_signed_cert_when_no_names_are_listed(redis_url: str, pki: dict[str, Path]) -> None:
    async with running_exporter(redis_url, client_ca_file=pki["ca"]) as exp:
        url = f"https://127.0.0.1:{exp.api_port}{BASE}"
        status, _ = await get(url, ssl=client_ssl(pki["other-cn.crt"], pki["other-cn.key"]))
        assert status == 200
        status, _ = await get(url, ssl=client_ssl())
        assert status == 401


async def test_mounted_serving_certificate(redis_url: str, tmp_path: Path) -> None:
    ca = issue("cluster-ca", is_ca=True)
    cert, key = issue("arqscale-exporter", issuer=ca, hostnames=["127.0.0.1"]).write(
        tmp_path / "tls.crt", tmp_path / "tls.key"
    )
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    async with running_exporter(redis_url, cert_file=cert, key_file=key) as exp:
        # A client that trusts only the cluster CA and checks the hostname: the mounted pair is served.
        verifying = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        status, _ = await get(f"https://127.0.0.1:{exp.api_port}/apis", ssl=verifying)
        assert status == 200


async def test_self_signed_pair_is_generated(redis_url: str) -> None:
    async with running_exporter(redis_url) as exp:
        assert exp._generated_tls_dir is not None and (exp._generated_tls_dir / "tls.key").exists()
        generated = exp._generated_tls_dir
        strict = ssl.create_default_context()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(f"https://127.0.0.1:{exp.api_port}/apis", ssl=strict)
        status, _ = await get(f"https://127.0.0.1:{exp.api_port}/apis", ssl=client_ssl())
        assert status == 200
    assert not generated.exists()  # the private key is removed when the exporter stops


def test_generated_pair_is_private_and_names_loopback(request: pytest.FixtureRequest) -> None:
    cert_path, key_path = serving_pair(None, None)
    request.addfinalizer(lambda: shutil.rmtree(cert_path.parent))
    assert key_path.stat().st_mode & 0o077 == 0  # nobody but the exporter's user reads the key
    assert cert_path.parent.stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)


def test_half_a_pair_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="set both"):
        serving_pair(tmp_path / "tls.crt", None)
