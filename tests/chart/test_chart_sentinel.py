"""The chart pointed at a Sentinel setup: REDIS_SENTINELS & co. in every process, passwords only from
Secrets, and values that cannot work refused with the field named. Rendering with helm 3 and 4 and the
strict schema check of ci/external-redis-sentinel-values.yaml run with every other values file."""

from __future__ import annotations

import base64

import pytest

from chart_support import HELMS, RELEASE, by_kind, env_of, one, parse_docs, pod_spec, render, template_with

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
