"""The chart pointed at a Sentinel setup: REDIS_SENTINELS & co. in every process, passwords only from
Secrets, and values that cannot work refused with the field named. Rendering with helm 3 and 4 and the
strict schema check of ci/external-redis-sentinel-values.yaml run with every other values file."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chart_support import HELMS, RELEASE, by_kind, env_of, one, parse_docs, pod_spec, render, template_with
from redis_server import free_port
from sentinel_servers import SentinelSetup

SENTINELS = "redis-node-0.redis-headless:26379,redis-node-1.redis-headless:26379,redis-node-2.redis-headless:26379"


@pytest.mark.parametrize("helm", HELMS)
def test_every_process_finds_the_primary_through_the_sentinels(helm: str) -> None:
    docs = render(helm, "external-redis-sentinel")
    deployments = by_kind(docs, "Deployment")
    assert len(deployments) >= 3  # workers, API, exporter
    for deployment in deployments:
        env = env_of(pod_spec(deployment)["containers"][0])
        assert env["REDIS_SENTINELS"]["value"] == SENTINELS
        assert env["REDIS_SENTINEL_MASTER"]["value"] == "mymaster"
        assert env["REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "redis-credentials",
            "key": "sentinel-password",
        }
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
        assert env["REDIS_WAIT_REPLICAS"]["value"] == "1"
        assert env["REDIS_WAIT_TIMEOUT_MS"]["value"] == "500"
        assert "REDIS_HOST" not in env and "REDIS_URL" not in env and "REDIS_PORT" not in env


@pytest.mark.parametrize("helm", HELMS)
def test_sentinel_password_given_in_values_goes_to_the_chart_secret(helm: str) -> None:
    args = (
        "--set", "redis.enabled=false",
        "--set", "externalRedis.sentinel.addresses={s1:26379,s2:26379}",
        "--set", "externalRedis.sentinel.password=sentinel-s3cret",
        "--set", "externalRedis.sentinel.tls=true",
    )  # fmt: skip
    result = template_with(helm, args)
    assert result.returncode == 0, result.stderr
    docs = parse_docs(result.stdout)
    secret = one(docs, "Secret", f"{RELEASE}-arqscale-redis-external")
    assert base64.b64decode(secret["data"]["sentinel-password"]).decode() == "sentinel-s3cret"
    assert "sentinel-s3cret" not in "".join(str(d) for d in docs if d["kind"] != "Secret")
    for deployment in by_kind(docs, "Deployment"):
        env = env_of(pod_spec(deployment)["containers"][0])
        assert env["REDIS_SENTINELS"]["value"] == "s1:26379,s2:26379"
        assert env["REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "sentinel-password"
        assert env["REDIS_SENTINEL_TLS"]["value"] == "true"
        assert "REDIS_WAIT_REPLICAS" not in env


BAD = [
    (["externalRedis.sentinel.addresses={s1:26379}", "externalRedis.host=redis"], "externalRedis.sentinel.addresses"),
    (["externalRedis.sentinel.addresses={s1:26379}", "externalRedis.url=redis://r:6379"], "externalRedis.sentinel"),
    (["externalRedis.sentinel.addresses={s1:26379}", "externalRedis.sentinel.existingSecretPasswordKey=k"], "needs"),
    (["externalRedis.sentinel.addresses={not an address}"], "addresses"),
    (["externalRedis.sentinel.addresses={s1:26379}", "externalRedis.waitReplicas=-1"], "waitReplicas"),
]


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(("sets", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_sentinel_values_name_the_field(helm: str, sets: list[str], message: str) -> None:
    args = ("--set", "redis.enabled=false", *(a for s in sets for a in ("--set", s)))
    result = template_with(helm, args)
    assert result.returncode != 0, f"rendered despite {sets}"
    assert message in result.stderr, result.stderr


def test_helm_test_script_pings_the_primary_through_real_sentinels(tmp_path: Path) -> None:
    """The `helm test` pod's script, from the sentinel render with its own environment, against a real
    primary, replica and three sentinels (only the addresses and the Secrets' values are loopback's)."""
    (pod,) = by_kind(render("helm3", "external-redis-sentinel"), "Pod")
    (container,) = pod["spec"]["containers"]
    env = {name: e["value"] for name, e in env_of(container).items() if "value" in e}
    assert env["REDIS_SENTINELS"] == SENTINELS
    setup = SentinelSetup(tmp_path / "sentinel", password="data-pw", sentinel_password="sentinel-pw").start()
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
        env |= setup.env() | {"EXPORTER_URL": f"http://127.0.0.1:{free_port()}"}  # no exporter: stops after the ping
        result = subprocess.run(
            [sys.executable, "-c", container["args"][0]], env=base | env, capture_output=True, text=True, timeout=60
        )
        assert f"ok   redis PING redis+sentinel://:***@{setup.sentinels}/mymaster/0" in result.stdout, result
        assert "data-pw" not in result.stdout + result.stderr and "sentinel-pw" not in result.stdout + result.stderr
    finally:
        setup.stop()
