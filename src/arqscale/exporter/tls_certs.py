"""TLS for the External Metrics API: the serving pair, and who may call us.

Kubernetes reaches an aggregated API over HTTPS. The serving certificate comes from mounted files
(cert-manager, a Secret) or, when none is configured, a self-signed pair made at start-up; the
APIService then needs ``insecureSkipTLSVerify: true`` (or the generated CA bundle), which is what the
metrics-server and KEDA charts do by default.

The kube-apiserver proves itself with its front-proxy client certificate, signed by the
request-header client CA (``requestheader-client-ca-file`` in the ``extension-apiserver-authentication``
ConfigMap). With that CA configured the TLS layer asks every client for a certificate and verifies
it against the CA (``CERT_OPTIONAL``, so kubelet probes of ``/livez`` without one still work), and
``ClientCertPolicy`` refuses API requests whose peer has no verified certificate or a common name
outside the allowed list. Without it, anyone who can reach the port may read queue counts.

Both files change under a running exporter: Kubernetes updates a mounted Secret in place (cert-manager
renews, ``helm upgrade`` re-generates), and the front-proxy CA rotates (the ``front_proxy_ca`` sidecar
rewrites its copy). ``ReloadingTLS`` re-reads them every few seconds and, when their bytes changed,
builds a new context that every later handshake uses (the SNI callback, called for every ClientHello
with or without a server name, switches the connection to it). A half-written or broken set keeps the
previous context and is tried again at the next poll.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTNAMES = ("localhost", "arqscale-exporter")

log = logging.getLogger("arqscale.exporter.tls")


class TLSConfigError(ValueError):
    """Certificate settings that cannot work; names the setting."""


@dataclass(frozen=True, slots=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
        cert_path.write_bytes(self.cert_pem())
        # The key file is created private: another user on the node must not read it.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key_pem())
        return cert_path, key_path


def issue(
    common_name: str,
    *,
    issuer: Issued | None = None,
    is_ca: bool = False,
    hostnames: Iterable[str] = (),
    client: bool = False,
    days: int = 365,
) -> Issued:
    """A certificate signed by ``issuer`` (self-signed when None): a CA, a server or a client cert."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew between nodes
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def serving_pair(cert_file: Path | None, key_file: Path | None, hostnames: Iterable[str] = ()) -> tuple[Path, Path]:
    """The configured cert and key, or a fresh self-signed pair in a private temporary directory."""
    if cert_file is not None and key_file is not None:
        for what, path in (("ARQSCALE_METRICS_API_CERT_FILE", cert_file), ("ARQSCALE_METRICS_API_KEY_FILE", key_file)):
            if not path.is_file():
                raise TLSConfigError(f"{what}: {path} does not exist")
        return cert_file, key_file
    if cert_file is not None or key_file is not None:
        raise TLSConfigError("set both ARQSCALE_METRICS_API_CERT_FILE and ARQSCALE_METRICS_API_KEY_FILE, or neither")
    # mkdtemp is 0700; /tmp is the one writable place in the read-only-root container.
    workdir = Path(tempfile.mkdtemp(prefix="arqscale-tls-"))
    names = [*DEFAULT_HOSTNAMES, "127.0.0.1", "::1", *hostnames]
    pair = issue("arqscale-exporter", hostnames=names)
    return pair.write(workdir / "tls.crt", workdir / "tls.key")


def server_context(cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot load the metrics API certificate {cert_file} / key {key_file}: {exc}") from None
    if client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(f"ARQSCALE_METRICS_API_CLIENT_CA_FILE: cannot load {client_ca_file}: {exc}") from None
        # OPTIONAL, not REQUIRED: a presented certificate must verify, but probes may come without one;
        # ClientCertPolicy then refuses API requests that carried none.
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class ReloadingTLS:
    """A server context that follows its files: ``context`` for the server, ``reload_if_changed()`` to poll."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> None:
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self.reloads = 0
        self._fingerprint = self._read_fingerprint()
        self.current = server_context(cert_file, key_file, client_ca_file)  # raises TLSConfigError: fail fast
        # The context the server is created with; each handshake is moved to ``current``.
        self.context = server_context(cert_file, key_file, client_ca_file)
        self.context.sni_callback = self._switch

    def _switch(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if conn.context is not self.current:
            conn.context = self.current

    def _files(self) -> list[Path]:
        return [self.cert_file, self.key_file, *([self.client_ca_file] if self.client_ca_file else [])]

    def _read_fingerprint(self) -> bytes | None:
        digest = hashlib.sha256()
        try:
            for path in self._files():
                data = path.read_bytes()
                digest.update(len(data).to_bytes(8, "big") + data)
        except OSError:
            return None
        return digest.digest()

    def reload_if_changed(self) -> bool:
        """Rebuild the context when a file's bytes changed; True when the new files are now served."""
        fingerprint = self._read_fingerprint()
        if fingerprint is None or fingerprint == self._fingerprint:
            return False
        try:
            fresh = server_context(self.cert_file, self.key_file, self.client_ca_file)
        except TLSConfigError as exc:
            # e.g. the key was replaced and the certificate not yet: keep serving the last good pair.
            log.warning("metrics API TLS files changed but do not load (still serving the previous ones): %s", exc)
            return False
        self.current = fresh
        self._fingerprint = fingerprint
        self.reloads += 1
        log.info("metrics API TLS files changed: serving certificate and client CA reloaded")
        return True


def common_name(peercert: dict[str, Any]) -> str | None:
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@dataclass(frozen=True, slots=True)
class ClientCertPolicy:
    """Who may call the API when a client CA is configured: a verified cert, and a CN on the list if any."""

    required: bool
    allowed_names: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, client_ca_file: Path | None, allowed_names: str) -> ClientCertPolicy:
        names = frozenset(n.strip() for n in allowed_names.split(",") if n.strip())
        return cls(required=client_ca_file is not None, allowed_names=names)

    def refusal(self, peercert: dict[str, Any] | None) -> str | None:
        """Why this peer is refused, or None when it may be served."""
        if not self.required:
            return None
        if not peercert:
            return "a client certificate signed by the request-header client CA is required"
        name = common_name(peercert)
        if self.allowed_names and name not in self.allowed_names:
            return f"client certificate common name {name!r} is not among the allowed names"
        return None
