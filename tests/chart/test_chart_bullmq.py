"""BullMQ queues autoscaled by the chart: an existing Deployment of Node workers, or one the chart runs.

Rendered by real helm 3 and helm 4, linted strictly and validated with ``kubernetes-validate --strict``
(the same checks the ci values files get; this values file lives beside the test because the
arq-only assertions of test_chart.py do not apply to it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from arqscale.chart.schema import HPA_METRICS, worker_name
from chart_support import (
    CHART,
    HELMS,
    KUBE_VERSIONS,
    RELEASE,
    Doc,
    by_kind,
    ensure_tools,
    env_of,
    one,
    parse_docs,
    pod_spec,
    run_tool,
    template_with,
    validation_errors,
)

VALUES = Path(__file__).with_name("bullmq-values.yaml")
FULLNAME = f"{RELEASE}-arqscale"


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    ensure_tools()


def rendered(helm: str, *extra: str) -> list[Doc]:
    result = template_with(helm, ("--values", str(VALUES), *extra))
    assert result.returncode == 0, result.stderr
    return parse_docs(result.stdout)


def failure(helm: str, *sets: str, values: Path = VALUES) -> str:
    result = template_with(helm, ("--values", str(values), *(a for s in sets for a in ("--set", s))))
    assert result.returncode != 0, "expected the render to fail"
    return result.stderr


def without_match_labels(tmp_path: Path) -> Path:
    """The values with kyc-verification's matchLabels removed (helm 4 refuses `--set x=null` by schema)."""
    values = yaml.safe_load(VALUES.read_text())
    del values["queues"]["kyc-verification"]["worker"]["existingDeployment"]["matchLabels"]
    path = tmp_path / "no-labels.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("helm", HELMS)
def test_lint_and_strict_schemas(helm: str) -> None:
    lint = run_tool(helm, "lint", "--strict", str(CHART), "-f", str(VALUES))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for version in KUBE_VERSIONS:
        assert validation_errors(rendered(helm), version) == []


@pytest.mark.parametrize("helm", HELMS)
def test_an_existing_deployment_of_bullmq_workers_is_scaled_not_run(helm: str) -> None:
    docs = rendered(helm)
    name = worker_name(FULLNAME, "kyc-verification")
    assert not [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == name]
    hpa = one(docs, "HorizontalPodAutoscaler", name)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "job-worker"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 20)
    [metric] = hpa["spec"]["metrics"]
    assert metric["external"]["metric"] == {
        "name": "bullmq_queue_waiting",
        "selector": {"matchLabels": {"queue": "kyc-verification"}},
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "100"}
    pdb = one(docs, "PodDisruptionBudget", name)
    assert pdb["spec"]["selector"] == {"matchLabels": {"app": "job-worker"}}
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("helm", HELMS)
def test_a_bullmq_worker_run_by_the_chart_gets_the_arq_workers_settings(helm: str) -> None:
    docs = rendered(helm)
    name = worker_name(FULLNAME, "image_processing")
    node = one(docs, "Deployment", name)
    arq = one(docs, "Deployment", worker_name(FULLNAME, "email"))
    spec, arq_spec = pod_spec(node), pod_spec(arq)
    [container], [arq_container] = spec["containers"], arq_spec["containers"]
    assert container["image"] == "registry.example.com/doc-worker:2.3.1"
    assert container["command"] == ["node", "dist/workers/image.js"]
    assert container["args"] == ["--concurrency", "3"]
    # Graceful shutdown: the grace period covers the drain timeout (45 s) plus the margin, as for arq.
    assert spec["terminationGracePeriodSeconds"] == 45 + 15
    # The same probes, hardening and placement as an arq worker; its own resources.
    for field in ("livenessProbe", "readinessProbe", "startupProbe", "securityContext", "ports"):
        assert container[field] == arq_container[field], field
    assert spec["securityContext"] == arq_spec["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    assert container["resources"]["requests"] == {"cpu": "200m", "memory": "256Mi"}
    env = env_of(container)
    assert env["ARQSCALE_QUEUE"]["value"] == "image_processing"
    assert env["BULLMQ_PREFIX"]["value"] == "media"
    assert env["NODE_OPTIONS"]["value"] == "--max-old-space-size=384"
    # The seeds' Node workers read REDIS_HOST/REDIS_PORT/REDIS_PASSWORD: the chart gives every worker those.
    assert {"REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"} <= set(env)
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
    hpa = one(docs, "HorizontalPodAutoscaler", name)
    assert hpa["spec"]["scaleTargetRef"]["name"] == name
    names = [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert names == [HPA_METRICS["waiting"], HPA_METRICS["oldest_waiting"]]
    assert one(docs, "PodDisruptionBudget", name)["spec"]["selector"] == pod_spec_selector(node)


def pod_spec_selector(deployment: Doc) -> Doc:
    selector: Doc = deployment["spec"]["selector"]
    assert set(selector["matchLabels"].items()) <= set(deployment["spec"]["template"]["metadata"]["labels"].items())
    return selector


@pytest.mark.parametrize("helm", HELMS)
def test_a_bullmq_queue_with_neither_is_only_counted(helm: str) -> None:
    docs = rendered(helm)
    assert not [d for d in docs if d["metadata"]["name"] == worker_name(FULLNAME, "legacy_orders")]
    queues_file = one(docs, "ConfigMap", f"{FULLNAME}-queues")["data"]["queues.yaml"]
    assert "legacy_orders" in queues_file and "existingDeployment" not in queues_file


@pytest.mark.parametrize("helm", HELMS)
def test_keda_scales_the_existing_deployment(helm: str) -> None:
    docs = rendered(helm, "--set", "autoscaling.engine=keda", "--set", "metricsApi.enabled=false")
    scaled = one(docs, "ScaledObject", worker_name(FULLNAME, "kyc-verification"))
    assert scaled["spec"]["scaleTargetRef"]["name"] == "job-worker"
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["metadata"]["valueLocation"] == "waiting"
    assert trigger["metadata"]["url"].endswith("/keda/v1/queues/kyc-verification")


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["queues.image_processing.worker.image.tag="], "queues.image_processing.worker.image.tag: pin your BullMQ"),
        (["queues.email.worker.command={node,x.js}"], "queues.email.worker: existingDeployment and command are for"),
        (["queues.kyc-verification.worker.command={node,x.js}"], "give either existingDeployment"),
    ],
)
def test_bad_bullmq_worker_values_fail_naming_the_queue(helm: str, sets: list[str], message: str) -> None:
    assert message in failure(helm, *sets)


@pytest.mark.parametrize("helm", HELMS)
def test_existing_deployment_needs_its_pod_labels_for_the_pdb(helm: str, tmp_path: Path) -> None:
    values = without_match_labels(tmp_path)
    message = failure(helm, values=values)
    assert "queues.kyc-verification.worker.existingDeployment.matchLabels: the pod labels of Deployment job-worker" in (
        message
    )
    # With the queue's PDB off, the HPA alone renders.
    result = template_with(
        helm, ("--values", str(values), "--set", "queues.kyc-verification.worker.podDisruptionBudget.enabled=false")
    )
    assert result.returncode == 0, result.stderr
    docs = parse_docs(result.stdout)
    name = worker_name(FULLNAME, "kyc-verification")
    assert one(docs, "HorizontalPodAutoscaler", name)
    assert not [d for d in by_kind(docs, "PodDisruptionBudget") if d["metadata"]["name"] == name]


@pytest.mark.parametrize("helm", HELMS)
def test_a_command_without_an_image_fails(helm: str, tmp_path: Path) -> None:
    values = yaml.safe_load(VALUES.read_text())
    del values["queues"]["image_processing"]["worker"]["image"]
    path = tmp_path / "no-image.yaml"
    path.write_text(yaml.safe_dump(values))
    assert "queues.image_processing.worker.image.repository: the image of your BullMQ worker" in failure(
        helm, values=path
    )
