"""The chart's webhook deliverer: on when a queue declares webhooks (or by value), with probes, metrics, a
graceful shutdown and the API's hardening; its secrets only ever referenced. Rendered by helm 3 and helm 4 and
validated strictly (kubernetes-validate) like every render (tests/chart/test_chart.py runs the ci values)."""

from __future__ import annotations

import pytest
import yaml

from arqscale.core.spec import parse_queues
from chart_support import (
    HELMS,
    KUBE_VERSIONS,
    Doc,
    by_kind,
    ensure_tools,
    env_of,
    one,
    parse_docs,
    pod_spec,
    render,
    template_with,
    validation_errors,
)

NAME = "jobs-arqscale-webhooks"


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    ensure_tools()


def deliverer(docs: tuple[Doc, ...] | list[Doc]) -> list[Doc]:
    return [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == NAME]


@pytest.mark.parametrize("helm", HELMS)
def test_on_when_a_queue_declares_webhooks(helm: str) -> None:
    docs = render(helm, "webhooks")
    [deployment] = deliverer(docs)
    pod = pod_spec(deployment)
    [container] = pod["containers"]
    assert container["args"] == ["webhooks"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"] == [{"name": "http", "containerPort": 8090, "protocol": "TCP"}]
    env = env_of(container)
    assert env["ARQSCALE_WEBHOOKS_ALLOW_NETWORKS"]["value"] == "10.20.0.0/16"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert pod["terminationGracePeriodSeconds"] > int(env["ARQSCALE_WEBHOOKS_DRAIN_SECONDS"]["value"])
    assert container["envFrom"] == [{"secretRef": {"name": "webhook-secrets"}}]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/arqscale/webhook-secrets/audit-webhook" in mounts
    # Hardened like the API: non-root, read-only root, no capabilities, no service account token.
    api = pod_spec(one(docs, "Deployment", "jobs-arqscale-api"))
    assert pod["securityContext"] == api["securityContext"]
    assert container["securityContext"] == api["containers"][0]["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    # Metrics: a PodMonitor; Redis' NetworkPolicy lets the deliverer in.
    monitors = [d for d in by_kind(docs, "PodMonitor") if d["metadata"]["name"] == NAME]
    assert monitors and monitors[0]["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    [policy] = by_kind(docs, "NetworkPolicy")
    components = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][2]["values"]
    assert "webhooks" in components


@pytest.mark.parametrize("helm", HELMS)
def test_the_queues_configmap_names_secrets_never_holds_them(helm: str) -> None:
    docs = render(helm, "webhooks")
    configmap = one(docs, "ConfigMap", "jobs-arqscale-queues")
    queues = yaml.safe_load(configmap["data"]["queues.yaml"])
    hooks = parse_queues(queues)["email"].webhooks
    assert hooks is not None and hooks.endpoints["billing"].secret_env == "BILLING_WEBHOOK_SECRET"
    assert by_kind(docs, "Secret") == [d for d in by_kind(docs, "Secret") if "webhook" not in d["metadata"]["name"]]


@pytest.mark.parametrize("helm", HELMS)
def test_off_by_default_and_by_value(helm: str) -> None:
    assert not deliverer(render(helm, "defaults"))  # the demo queues declare no webhooks
    forced_on = template_with(helm, ("--set", "webhooks.enabled=true"))
    assert forced_on.returncode == 0, forced_on.stderr
    assert deliverer(parse_docs(forced_on.stdout))
    forced_off = template_with(
        helm, ("--values", "helm/arqscale/ci/webhooks-values.yaml", "--set", "webhooks.enabled=false")
    )
    assert forced_off.returncode == 0, forced_off.stderr
    docs = parse_docs(forced_off.stdout)
    assert not deliverer(docs)
    assert not [d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"] == NAME]


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_forced_on_render_is_valid(helm: str, version: str) -> None:
    result = template_with(helm, ("--set", "webhooks.enabled=true", "--set", "webhooks.secrets.files[0]=a.b"))
    assert result.returncode == 0, result.stderr
    assert validation_errors(parse_docs(result.stdout), version) == []


@pytest.mark.parametrize("helm", HELMS)
def test_bad_values_are_refused(helm: str) -> None:
    for sets in (
        ("webhooks.enabled=maybe",),
        ("webhooks.allowNetworks[0]=not a net",),
        ("webhooks.secrets.files[0]=",),
    ):
        args = tuple(a for s in sets for a in ("--set", s))
        assert template_with(helm, args).returncode != 0, sets
