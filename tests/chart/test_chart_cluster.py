"""The chart pointed at a Redis Cluster: REDIS_CLUSTER_NODES in every process, the password only from a
Secret, and values that cannot work on a cluster refused with the field named. Rendering with helm 3 and 4
and the strict schema check of ci/external-redis-cluster-values.yaml run with every other values file."""

from __future__ import annotations

import pytest

from chart_support import HELMS, by_kind, env_of, pod_spec, render, template_with

NODES = (
    "redis-cluster-0.redis-cluster-headless:6379,redis-cluster-1.redis-cluster-headless:6379,"
    "redis-cluster-2.redis-cluster-headless:6379"
)


@pytest.mark.parametrize("helm", HELMS)
def test_every_process_gets_the_cluster_nodes(helm: str) -> None:
    docs = render(helm, "external-redis-cluster")
    deployments = by_kind(docs, "Deployment")
    assert len(deployments) >= 3  # workers, API, exporter
    for deployment in deployments:
        env = env_of(pod_spec(deployment)["containers"][0])
        assert env["REDIS_CLUSTER_NODES"]["value"] == NODES
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "redis-credentials",
            "key": "redis-password",
        }
        assert env["REDIS_DB"]["value"] == "0"
        assert not {"REDIS_HOST", "REDIS_PORT", "REDIS_URL", "REDIS_SENTINELS", "REDIS_WAIT_REPLICAS"} & set(env)


BAD = [
    (["externalRedis.cluster.nodes={n1:6379}", "externalRedis.host=redis"], "externalRedis.cluster.nodes"),
    (["externalRedis.cluster.nodes={n1:6379}", "externalRedis.url=redis://r:6379"], "externalRedis.cluster.nodes"),
    (["externalRedis.cluster.nodes={n1:6379}", "externalRedis.sentinel.addresses={s1:26379}"], "cluster.nodes"),
    (["externalRedis.cluster.nodes={n1:6379}", "externalRedis.db=2"], "externalRedis.db"),
    (["externalRedis.cluster.nodes={n1:6379}", "externalRedis.waitReplicas=1"], "externalRedis.waitReplicas"),
    (["externalRedis.cluster.nodes={not an address}"], "nodes"),
]


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(("sets", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_cluster_values_name_the_field(helm: str, sets: list[str], message: str) -> None:
    args = ("--set", "redis.enabled=false", *(a for s in sets for a in ("--set", s)))
    result = template_with(helm, args)
    assert result.returncode != 0, f"rendered despite {sets}"
    assert message in result.stderr, result.stderr
