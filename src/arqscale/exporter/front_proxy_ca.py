"""Keep a copy of the API server's front-proxy client CA current (``python -m arqscale.exporter.front_proxy_ca``).

The kube-apiserver signs its requests to aggregated APIs with the front-proxy client certificate; the
CA that verifies it is ``requestheader-client-ca-file`` in ``kube-system/extension-apiserver-authentication``.
A pod cannot mount a ConfigMap of another namespace, so the chart runs this twice beside the exporter:
once as an init container (``--once``: the exporter starts with the CA in place) and then as a small
sidecar that reads the ConfigMap again every ``--interval`` seconds and rewrites the file (atomically)
when the CA changed, e.g. after a front-proxy CA rotation. The exporter re-reads the file and verifies
the aggregator's certificate against the new CA without a restart (``tls_certs.ReloadingTLS``), which
is what custom-metrics-apiserver does by watching the ConfigMap (``DynamicRequestHeaderController``).

Only these two containers get a service-account token (a projected volume); the exporter, which
serves the network, has none. Plain ``urllib``, no Kubernetes client library or aiohttp (about 50 MiB
resident, most of it the ``arqscale`` package's own imports); the token file is read again for every
request (the kubelet rotates it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger("arqscale.exporter.front_proxy_ca")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CONFIGMAP_PATH = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
KEY = "requestheader-client-ca-file"


class FetchError(RuntimeError):
    """The CA could not be read; the message says what to do."""


def api_base(environ: dict[str, str] | os._Environ[str]) -> str:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise FetchError("KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set: not running in a pod")
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"


def fetch_ca(base: str, token_file: Path, ca_file: Path, timeout: float = 10.0) -> str:
    """The request-header client CA bundle (PEM) from the ConfigMap."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    token = token_file.read_text().strip()
    request = urllib.request.Request(
        base + CONFIGMAP_PATH, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        hint = (
            " (the service account needs the RoleBinding to kube-system's extension-apiserver-authentication-reader)"
            if exc.code == 403
            else ""
        )
        raise FetchError(f"reading kube-system/extension-apiserver-authentication: HTTP {exc.code}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(f"reading kube-system/extension-apiserver-authentication: {exc}") from None
    ca = (body.get("data") or {}).get(KEY)
    if not ca:
        raise FetchError(
            f"extension-apiserver-authentication has no {KEY}; set metricsApi.clientAuth.enabled=false "
            "to serve without client certificates"
        )
    return str(ca)


def write_if_changed(out: Path, content: str) -> bool:
    """Replace ``out`` atomically (a reader never sees half a file); False when it already holds ``content``."""
    try:
        if out.read_text() == content:
            return False
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".ca-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def sync_once(out: Path, base: str, token_file: Path, ca_file: Path) -> bool:
    changed = write_if_changed(out, fetch_ca(base, token_file, ca_file))
    if changed:
        log.info("front-proxy client CA written to %s", out)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m arqscale.exporter.front_proxy_ca", description="keep the front-proxy client CA file current"
    )
    parser.add_argument("--out", type=Path, required=True, help="file the exporter reads as its client CA")
    parser.add_argument("--once", action="store_true", help="copy once and exit (the init container)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between reads (the sidecar)")
    parser.add_argument("--service-account-dir", type=Path, default=SERVICE_ACCOUNT)
    args = parser.parse_args(argv)
    # PID 1 of its container: without a handler SIGTERM would be ignored until the grace period ends.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token_file, ca_file = args.service_account_dir / "token", args.service_account_dir / "ca.crt"
    try:
        base = api_base(os.environ)
    except FetchError as exc:
        print(f"front-proxy CA: {exc}", file=sys.stderr)
        return 2
    if args.once:
        try:
            sync_once(args.out, base, token_file, ca_file)
        except FetchError as exc:
            print(f"front-proxy CA: {exc}", file=sys.stderr)
            return 1
        return 0
    while True:  # the sidecar: a failed read keeps the last good CA and is tried again
        try:
            sync_once(args.out, base, token_file, ca_file)
        except FetchError as exc:
            log.warning("%s (keeping the current CA)", exc)
        time.sleep(args.interval)


if __name__ == "__main__":  # pragma: no cover - run by the chart's containers
    sys.exit(main())
