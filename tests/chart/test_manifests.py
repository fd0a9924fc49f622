"""k8s/ (kustomize), skaffold.yaml and kind: valid, linted, and the same deployment as the chart."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from arqscale.chart.schema import HPA_METRICS
from arqscale.core.spec import parse_queues
from arqscale.exporter.external_metrics import METRICS as SERVED_METRICS
from chart_support import (
    CHART,
    KUBE_VERSIONS,
    ROOT,
    TOOLS,
    Doc,
    by_kind,
    ensure_tools,
    env_of,
    helm_template,
    one,
    parse_docs,
    pod_spec,
    run_tool,
    validation_errors,
)

K8S = ROOT / "k8s"
SKAFFOLD = ROOT / "skaffold.yaml"
# The chart values the plain manifests in k8s/base correspond to.
BASE_EQUIVALENT_VALUES = """
fullnameOverride: arqscale
queues:
  email:
    functions: [arqscale.demo.tasks.send_email]
    concurrency: 20
    job_timeout: 30
    max_tries: 5
    backoff: {strategy: exponential, delay: 1, max_delay: 30}
    rate_limit: {max_jobs: 50, interval: 1}
    autoscaling: {min_replicas: 1, max_replicas: 10, metrics: [backlog], target_per_replica: 50}
metricsApi:
  clientAuth: {enabled: false}
tests: {enabled: false}
"""


@pytest.fixture(scope="session", autouse=True)
def tools() -> None:
    ensure_tools()


@functools.cache
def kustomize(path: str) -> tuple[Doc, ...]:
    result = run_tool("kubectl", "kustomize", str(K8S / path))
    assert result.returncode == 0, result.stderr
    return tuple(parse_docs(result.stdout))


@functools.cache
def chart_equivalent(tmp: str) -> tuple[Doc, ...]:
    values = Path(tmp) / "base-equivalent.yaml"
    values.write_text(BASE_EQUIVALENT_VALUES)
    result = helm_template("helm3", "-f", str(values), release="arqscale", namespace="arqscale")
    assert result.returncode == 0, result.stderr
    return tuple(parse_docs(result.stdout))


@pytest.fixture(scope="module")
def chart_docs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Doc, ...]:
    return chart_equivalent(str(tmp_path_factory.mktemp("chart")))


def skaffold() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return data


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("path", ["base", "overlays/kind"])
def test_kustomize_builds_valid_kubernetes(path: str, version: str) -> None:
    docs = kustomize(path)
    assert docs
    assert validation_errors(docs, version) == []


def test_yamllint_skaffold_k8s_and_ci_values() -> None:
    result = subprocess.run(
        [
            str(Path(__import__("sys").executable).parent / "yamllint"),
            "--strict",
            "skaffold.yaml",
            "k8s",
            str(CHART / "ci"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _namespace(doc: Doc) -> str | None:
    """helm template leaves the release namespace implicit; kustomize states it."""
    default = None if doc["kind"].startswith("Cluster") else "arqscale"
    namespace: str | None = doc["metadata"].get("namespace", default)
    return namespace


def _workloads(docs: tuple[Doc, ...]) -> dict[tuple[str, str], Doc]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def _container_essentials(container: Doc) -> dict[str, Any]:
    env = env_of(container)
    return {
        "args": container.get("args"),
        "ports": container.get("ports"),
        "probes": {k: container.get(k) for k in ("livenessProbe", "readinessProbe", "startupProbe")},
        "securityContext": container["securityContext"],
        "resources": container["resources"],
        # the base's exporter serves a self-signed certificate, the chart mounts a generated one
        "env": sorted(n for n in env if n not in ("ARQSCALE_METRICS_API_CERT_FILE", "ARQSCALE_METRICS_API_KEY_FILE")),
        "mounts": sorted(m["mountPath"] for m in container["volumeMounts"] if m["name"] != "metrics-api-tls"),
    }


def test_base_is_the_same_deployment_as_the_chart(chart_docs: tuple[Doc, ...]) -> None:
    base = kustomize("base")
    chart_workloads, base_workloads = _workloads(chart_docs), _workloads(base)
    assert sorted(base_workloads) == sorted(chart_workloads)
    for key, chart_doc in chart_workloads.items():
        base_doc = base_workloads[key]
        assert base_doc["spec"]["selector"] == chart_doc["spec"]["selector"], key
        base_pod, chart_pod = pod_spec(base_doc), pod_spec(chart_doc)
        assert base_doc["spec"].get("replicas") == chart_doc["spec"].get("replicas"), key
        for field in (
            "securityContext",
            "automountServiceAccountToken",
            "terminationGracePeriodSeconds",
            "topologySpreadConstraints",
        ):
            assert base_pod.get(field) == chart_pod.get(field), (key, field)
        assert base_pod.get("serviceAccountName") == chart_pod.get("serviceAccountName"), key
        for base_c, chart_c in zip(base_pod["containers"], chart_pod["containers"], strict=True):
            assert _container_essentials(base_c) == _container_essentials(chart_c), key
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert sorted(d["metadata"]["name"] for d in by_kind(base, kind)) == sorted(
            d["metadata"]["name"] for d in by_kind(chart_docs, kind)
        )
        for chart_doc in by_kind(chart_docs, kind):
            assert one(base, kind, chart_doc["metadata"]["name"])["spec"] == chart_doc["spec"]
    # No system:auth-delegator: the exporter never calls TokenReview or SubjectAccessReview.
    assert not [d for d in base if d["kind"].endswith("Binding") and d["roleRef"]["name"] == "system:auth-delegator"]
    for kind in ("Role", "ClusterRole"):
        assert sorted(str(d["rules"]) for d in by_kind(base, kind)) == sorted(
            str(d["rules"]) for d in by_kind(chart_docs, kind)
        )

    def bindings(docs: tuple[Doc, ...]) -> dict[tuple[str, str | None, str], object]:
        return {
            (d["kind"], _namespace(d), d["roleRef"]["name"].replace("arqscale-arqscale-", "arqscale-")): d["subjects"]
            for d in docs
            if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        }

    assert bindings(base) == bindings(chart_docs)
    chart_api = one(chart_docs, "APIService", "v1beta1.external.metrics.k8s.io")["spec"]
    base_api = one(base, "APIService", "v1beta1.external.metrics.k8s.io")["spec"]
    assert base_api["service"] == chart_api["service"]
    assert base_api["insecureSkipTLSVerify"] is True and "caBundle" not in base_api


def test_base_worker_semantics() -> None:
    docs = kustomize("base")
    (configmap,) = by_kind(docs, "ConfigMap")
    specs = parse_queues(yaml.safe_load(configmap["data"]["queues.yaml"]))
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
    queue = deployment["metadata"]["labels"]["arqscale.io/queue"]
    spec = specs[queue]
    assert pod_spec(deployment)["containers"][0]["args"] == ["worker", "--queue", queue]
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > spec.effective_drain_timeout >= spec.job_timeout
    for metric in hpa["spec"]["metrics"]:
        assert metric["external"]["metric"]["name"] in SERVED_METRICS
        assert metric["external"]["metric"]["selector"] == {"matchLabels": {"queue": queue}}
    assert [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == [
        HPA_METRICS[h] for h in spec.autoscaling.metrics
    ]
    # the generated ConfigMap's hashed name is what the pods mount
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["queues"]["configMap"]["name"] == configmap["metadata"]["name"] != "arqscale-queues"


def test_kind_overlay_secrets_and_images() -> None:
    docs = kustomize("overlays/kind")
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    for doc in [*by_kind(docs, "Deployment"), *by_kind(docs, "StatefulSet")]:
        for container in pod_spec(doc)["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, ref
                    assert ref["key"] in secrets[ref["name"]]["data"], ref
    cluster_scoped = ("ClusterRole", "ClusterRoleBinding", "APIService", "Namespace")
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] not in cluster_scoped}
    assert namespaces == {"arqscale", "kube-system"}


def _repo_name(image: str) -> str:
    return image.split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1]


def test_image_names_agree_between_chart_k8s_skaffold_and_docs() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart_images = {
        "Dockerfile": _repo_name(values["image"]["repository"]),
        "Dockerfile.worker": _repo_name(values["worker"]["image"]["repository"]),
    }
    assert chart_images == {"Dockerfile": "arqscale", "Dockerfile.worker": "arqscale-worker"}  # docs/design.md
    artifacts = {a["docker"]["dockerfile"]: a["image"] for a in skaffold()["build"]["artifacts"]}
    assert artifacts == chart_images
    base_images = {
        _repo_name(c["image"])
        for d in [*by_kind(kustomize("base"), "Deployment")]
        for c in [*pod_spec(d).get("initContainers", []), *pod_spec(d)["containers"]]
    }
    assert base_images == set(chart_images.values())
    kind_images = {
        c["image"] for d in by_kind(kustomize("overlays/kind"), "Deployment") for c in pod_spec(d)["containers"]
    }
    assert kind_images == {f"{name}:dev" for name in chart_images.values()}
    for dockerfile in chart_images:
        assert (ROOT / dockerfile).is_file()


def test_skaffold_deploys_the_chart_with_its_images() -> None:
    config = skaffold()
    assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"])
    assert config["kind"] == "Config"
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    names = {a["image"].replace("-", "_").replace("/", "_") for a in config["build"]["artifacts"]}
    templates = release["setValueTemplates"]
    for key, template in templates.items():
        node = values
        for part in key.split("."):
            assert part in node, f"setValueTemplates sets {key}, which the chart does not have"
            node = node[part]
        (var,) = re.findall(r"\{\{\.IMAGE_(?:REPO|TAG)_(\w+)\}\}", template)
        assert var in names
    assert templates["image.repository"] == "{{.IMAGE_REPO_arqscale}}"
    assert templates["worker.image.repository"] == "{{.IMAGE_REPO_arqscale_worker}}"
    assert set(templates) == {"image.repository", "image.tag", "worker.image.repository", "worker.image.tag"}


def test_kind_profile_matches_the_kind_cluster_and_makefile() -> None:
    cluster = yaml.safe_load((K8S / "kind-cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster" and cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (profile,) = [p for p in skaffold()["profiles"] if p["name"] == "kind"]
    assert profile["activation"] == [{"kubeContext": f"kind-{cluster['name']}"}]
    for patch in profile["patches"]:
        for values_file in patch["value"]:
            assert (ROOT / values_file).is_file()
    makefile = (ROOT / "Makefile").read_text()
    assert f"KIND_CLUSTER := {cluster['name']}" in makefile
    assert "k8s/kind-cluster.yaml" in makefile and "--profile kind" in makefile
    for node in cluster["nodes"]:
        assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+(@sha256:[0-9a-f]{64})?", node["image"])


def test_make_kind_targets_are_declared() -> None:
    result = subprocess.run(["make", "-n", "kind-up"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "skaffold run --kube-context kind-arqscale --profile kind" in result.stdout
    result = subprocess.run(["make", "-n", "kind-down"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert "kind delete cluster --name arqscale" in result.stdout


def test_fetch_tools_is_idempotent_and_pins_the_versions() -> None:
    """A second run downloads nothing (the binaries answer) and reports the pinned versions."""
    before = {p.name: p.stat().st_mtime_ns for p in TOOLS.iterdir() if p.is_file() and not p.is_symlink()}
    result = subprocess.run(
        [str(ROOT / "scripts" / "fetch-tools")], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^helm3: +v3\.18\.", result.stdout, re.M), result.stdout
    assert re.search(r"^helm4: +v4\.", result.stdout, re.M), result.stdout
    assert re.search(r"^kubectl: +Client Version: v1\.33\.", result.stdout, re.M), result.stdout  # the kind nodes: 1.33
    after = {p.name: p.stat().st_mtime_ns for p in TOOLS.iterdir() if p.is_file() and not p.is_symlink()}
    assert after == before
    assert (TOOLS / "helm").resolve() == (TOOLS / "helm3").resolve()


def test_fetch_tools_without_pip_uses_verified_release_archives(tmp_path: Path) -> None:
    """No pip (stock Debian/Ubuntu), macOS or arm64: the release archives, checked against their SHA-256
    files. Served here from a local mirror laid out like the release hosts, with the real binaries."""
    import hashlib
    import http.server
    import platform
    import tarfile
    import threading

    ensure_tools()
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    osname = {"Linux": "linux", "Darwin": "darwin"}[platform.system()]
    mirror = tmp_path / "mirror"
    for version, binary in (("3.18.0", "helm3"), ("4.3.1", "helm4")):
        archive = mirror / "helm" / f"helm-v{version}-{osname}-{machine}.tar.gz"
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(TOOLS / binary, arcname=f"{osname}-{machine}/helm")
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        (archive.parent / (archive.name + ".sha256sum")).write_text(f"{digest}  {archive.name}\n")
    kubectl_path = mirror / "k8s" / "v1.33.0" / "bin" / osname / machine / "kubectl"
    kubectl_path.parent.mkdir(parents=True)
    kubectl_path.write_bytes((TOOLS / "kubectl").read_bytes())
    (kubectl_path.parent / "kubectl.sha256").write_text(hashlib.sha256(kubectl_path.read_bytes()).hexdigest())

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    env = {
        "PATH": "/usr/bin:/bin",
        "ARQSCALE_TOOLS_DIR": str(tmp_path / "bin"),
        "ARQSCALE_TOOLS_FROM_RELEASES": "1",
        "ARQSCALE_HELM_DOWNLOADS": base + "/helm",
        "ARQSCALE_KUBECTL_DOWNLOADS": base + "/k8s",
    }
    try:
        result = subprocess.run(
            [str(ROOT / "scripts" / "fetch-tools")], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr
        assert re.search(r"^helm3: +v3\.18\.", result.stdout, re.M), result.stdout
        assert re.search(r"^kubectl: +Client Version: v1\.33\.", result.stdout, re.M), result.stdout
        # A tampered archive is refused.
        (tmp_path / "bin" / "helm4").unlink()
        (mirror / "helm" / f"helm-v4.3.1-{osname}-{machine}.tar.gz").write_bytes(b"not helm")
        result = subprocess.run(
            [str(ROOT / "scripts" / "fetch-tools")], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode != 0 and "checksum mismatch" in result.stderr
    finally:
        server.shutdown()
        server.server_close()
