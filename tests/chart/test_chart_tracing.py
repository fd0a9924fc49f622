"""Tracing in the chart (issue 15): `tracing:` sets the standard OTEL_* variables on the API and arq worker
pods, and nothing when off. Rendered by real helm 3 and 4; the all-on values file carries it through the
strict Kubernetes validation of test_chart.py."""

from __future__ import annotations

import pytest

from chart_support import HELMS, by_kind, ensure_tools, env_of, pod_spec, render


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    ensure_tools()


def _containers(values: str, helm: str) -> dict[str, dict[str, object]]:
    found = {}
    for doc in by_kind(render(helm, values), "Deployment"):
        component = doc["metadata"]["labels"].get("app.kubernetes.io/component")
        if component in ("api", "worker"):
            found[doc["metadata"]["name"]] = {"component": component, "env": env_of(pod_spec(doc)["containers"][0])}
    return found


@pytest.mark.parametrize("helm", HELMS)
def test_traced_pods_get_the_standard_otel_variables(helm: str) -> None:
    containers = _containers("all-on", helm)
    assert {c["component"] for c in containers.values()} == {"api", "worker"}
    for name, c in containers.items():
        env = c["env"]
        assert isinstance(env, dict)
        values = {k: v.get("value") for k, v in env.items() if k.startswith("OTEL_")}
        service = "arqscale-api" if c["component"] == "api" else "arqscale-worker"
        assert values["OTEL_TRACES_EXPORTER"] == "otlp", name
        assert values["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
        assert values["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert values["OTEL_SERVICE_NAME"] == service
        assert values["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert values["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
        attributes = str(values["OTEL_RESOURCE_ATTRIBUTES"])
        assert "deployment.environment=prod" in attributes
        if c["component"] == "worker":
            # $(POD_NAME) is expanded by the kubelet only when POD_NAME comes earlier in the list.
            assert "k8s.pod.name=$(POD_NAME)" in attributes
            names = list(env)
            assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")


@pytest.mark.parametrize("helm", HELMS)
def test_without_tracing_no_pod_has_otel_variables(helm: str) -> None:
    for name, c in _containers("defaults", helm).items():
        env = c["env"]
        assert isinstance(env, dict)
        assert not [k for k in env if k.startswith("OTEL_")], name
