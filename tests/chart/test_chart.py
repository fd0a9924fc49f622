"""The Helm chart, rendered by real helm 3 and helm 4 for every ci values file, checked for meaning.

Each (helm, values file) pair renders once per session (``chart_support.render``); the tests read
those renders. Nothing here needs a cluster.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from arqscale.chart.schema import HPA_METRICS, KEDA_FIELDS, queue_slug, worker_name
from arqscale.core.demo_queues import DEMO_QUEUES
from arqscale.core.models import QueueCounts
from arqscale.core.settings import ArqscaleSettings
from arqscale.core.spec import QueueSpec, parse_queues
from arqscale.exporter.external_metrics import METRICS as SERVED_METRICS
from arqscale.exporter.wait_target import KEDA_FIELD as WAIT_KEDA_FIELD
from arqscale.exporter.wait_target import METRIC as WAIT_METRIC
from chart_support import (
    CHART,
    HELMS,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    VALUES,
    Doc,
    by_kind,
    chart_values,
    component,
    effective_queues,
    ensure_tools,
    env_of,
    helm_template,
    lint,
    one,
    parse_docs,
    pod_spec,
    prefetch,
    render,
    run_tool,
    template_with,
    validation_errors,
)

CASES = [(helm, values) for helm in HELMS for values in VALUES]
CASE_IDS = [f"{h}-{v}" for h, v in CASES]
FULLNAME = {"all-on": "jobs"}  # values files that set fullnameOverride
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.fixture(scope="session", autouse=True)
def tools() -> None:
    ensure_tools()
    prefetch((helm, _set_args(sets)) for helm in HELMS for sets, _ in BAD_VALUES)


def _set_args(sets: list[str]) -> tuple[str, ...]:
    return tuple(a for s in sets for a in ("--set", s))


def fullname(values: str) -> str:
    return FULLNAME.get(values, f"{RELEASE}-arqscale")


def arq_queues(values: str) -> dict[str, QueueSpec]:
    """The queues as the worker will read them (validated by the real model)."""
    queues = effective_queues(values)
    specs = parse_queues({"queues": {n: {k: v for k, v in q.items() if k != "worker"} for n, q in queues.items()}})
    return {name: spec for name, spec in specs.items() if spec.backend == "arq"}


def engine(values: str) -> str:
    return str(chart_values(values)["autoscaling"]["engine"])


def default_port(field: str) -> int:
    value = ArqscaleSettings.model_fields[field].default
    assert isinstance(value, int)
    return value


def container_port(container: Doc, name_or_number: object) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return int(ports[name_or_number])


# Syntax: lint and the official schemas ---------------------------------------------------------


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_helm_lint_is_clean(helm: str, values: str) -> None:
    result = lint(helm, values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_render_is_valid_kubernetes(helm: str, values: str, version: str) -> None:
    docs = render(helm, values)
    assert docs
    assert validation_errors(docs, version) == []


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_names_are_unique_and_valid(helm: str, values: str) -> None:
    docs = render(helm, values)
    seen = [(d["kind"], d["metadata"].get("namespace", NAMESPACE), d["metadata"]["name"]) for d in docs]
    assert len(seen) == len(set(seen))
    for doc in docs:
        if doc["kind"] != "APIService":
            assert len(doc["metadata"]["name"]) <= 63 and DNS_LABEL.match(doc["metadata"]["name"]), doc["metadata"]
        for key, value in doc["metadata"]["labels"].items():
            assert LABEL_VALUE.match(str(value)) and len(str(value)) <= 63, (key, value)


# One worker, one autoscaler, one PDB per queue ---------------------------------------------------


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_one_worker_deployment_per_arq_queue(helm: str, values: str) -> None:
    docs = render(helm, values)
    workers = component(docs, "Deployment", "worker")
    queues = arq_queues(values)
    assert sorted(d["metadata"]["labels"]["arqscale.io/queue"] for d in workers) == sorted(queues)
    for deployment in workers:
        queue = deployment["metadata"]["labels"]["arqscale.io/queue"]
        assert deployment["metadata"]["name"] == worker_name(fullname(values), queue)
        (container,) = pod_spec(deployment)["containers"]
        assert container["args"] == ["worker", "--queue", queue]
        assert deployment["spec"]["selector"]["matchLabels"]["arqscale.io/queue"] == queue
        env = env_of(container)
        assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert env["ARQSCALE_QUEUES_FILE"]["value"] == f"{mounts['queues']}/queues.yaml"


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_one_autoscaler_per_autoscaled_queue(helm: str, values: str) -> None:
    docs = render(helm, values)
    queues = arq_queues(values)
    scaled = sorted(name for name, spec in queues.items() if spec.autoscaling.enabled)
    manual = sorted(name for name, spec in queues.items() if not spec.autoscaling.enabled)
    hpas, scaled_objects = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "ScaledObject")
    autoscalers = hpas if engine(values) == "hpa" else scaled_objects
    assert not (hpas and scaled_objects)
    assert sorted(d["metadata"]["labels"]["arqscale.io/queue"] for d in autoscalers) == scaled
    for name in scaled:
        deployment = one(docs, "Deployment", worker_name(fullname(values), name))
        assert "replicas" not in deployment["spec"], "the autoscaler owns replicas; helm upgrade must not reset them"
    # autoscaling off: a fixed replica count and no HPA, so `kubectl scale` sticks
    for name in manual:
        deployment = one(docs, "Deployment", worker_name(fullname(values), name))
        override = effective_queues(values)[name].get("worker", {})
        assert deployment["spec"]["replicas"] == override.get("replicas", chart_values(values)["worker"]["replicas"])


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_pod_disruption_budgets(helm: str, values: str) -> None:
    docs = render(helm, values)
    pdbs = {d["metadata"]["labels"]["arqscale.io/queue"]: d for d in component(docs, "PodDisruptionBudget", "worker")}
    for name in arq_queues(values):
        enabled = effective_queues(values)[name].get("worker", {}).get("podDisruptionBudget", {}).get("enabled", True)
        assert (name in pdbs) == enabled
        if enabled:
            deployment = one(docs, "Deployment", worker_name(fullname(values), name))
            assert pdbs[name]["spec"]["selector"] == deployment["spec"]["selector"]
            # A drain during a Redis outage (every worker unready) must not hang on the budget.
            assert pdbs[name]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    # The exporter (the cluster's External Metrics API) survives a drain: several replicas and a budget.
    exporter = one(docs, "Deployment", f"{fullname(values)}-exporter")
    (exporter_pdb,) = component(docs, "PodDisruptionBudget", "exporter")
    assert exporter_pdb["spec"]["selector"] == exporter["spec"]["selector"]
    assert exporter_pdb["spec"]["maxUnavailable"] == 1
    assert exporter["spec"]["replicas"] == chart_values(values)["exporter"]["replicas"] >= 2


def test_hpa_metrics_are_ones_the_exporter_serves() -> None:
    assert set(HPA_METRICS.values()) <= set(SERVED_METRICS)
    counts = QueueCounts(queue="q").as_dict()
    for hint, field in KEDA_FIELDS.items():
        if hint == "wait_target":  # computed by the exporter, not a count (tests/exporter/test_wait_target_served.py)
            assert (field, HPA_METRICS[hint]) == (WAIT_KEDA_FIELD, WAIT_METRIC)
            continue
        assert field in counts, hint
        assert SERVED_METRICS[HPA_METRICS[hint]] == field, "the HPA and KEDA must read the same count"


@pytest.mark.parametrize(("helm", "values"), [c for c in CASES if engine(c[1]) == "hpa"], ids=lambda c: str(c))
def test_hpas_read_the_exporters_metrics_for_their_queue(helm: str, values: str) -> None:
    docs = render(helm, values)
    queues = arq_queues(values)
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        queue = hpa["metadata"]["labels"]["arqscale.io/queue"]
        spec = queues[queue]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": worker_name(fullname(values), queue),
        }
        assert hpa["spec"]["minReplicas"] == spec.autoscaling.min_replicas >= 1
        assert hpa["spec"]["maxReplicas"] == spec.autoscaling.max_replicas
        metrics = hpa["spec"]["metrics"]
        assert [m["external"]["metric"]["name"] for m in metrics] == [HPA_METRICS[h] for h in spec.autoscaling.metrics]
        for metric, hint in zip(metrics, spec.autoscaling.metrics, strict=True):
            assert metric["type"] == "External"
            assert metric["external"]["metric"]["name"] in SERVED_METRICS
            assert metric["external"]["metric"]["selector"] == {"matchLabels": {"queue": queue}}
            target = target_for(spec, hint)
            assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": quantity(target)}
        behavior = hpa["spec"]["behavior"]
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0, "scale up fast"
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60, "scale down calmly"


def target_for(spec: QueueSpec, hint: str) -> float:
    """What one replica is for: jobs, seconds of age, or (wait_target) one worker."""
    a = spec.autoscaling
    return {"oldest_waiting": a.target_oldest_waiting_seconds, "wait_target": 1}.get(hint, a.target_per_replica)


def quantity(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{round(value * 1000)}m"


def test_quantity_format_of_fractional_targets() -> None:
    docs = render("helm3", "non-dns-queues")
    hpa = one(docs, "HorizontalPodAutoscaler", worker_name(fullname("non-dns-queues"), "image_processing"))
    assert hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"] == "2500m"


@pytest.mark.parametrize("helm", HELMS)
def test_keda_scaled_objects(helm: str) -> None:
    docs = render(helm, "keda")
    queues = arq_queues("keda")
    exporter = one(docs, "Service", f"{fullname('keda')}-exporter")
    http_port = next(p["port"] for p in exporter["spec"]["ports"] if p["name"] == "http-metrics")
    scaled_objects = by_kind(docs, "ScaledObject")
    assert scaled_objects
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    for so in scaled_objects:
        queue = so["metadata"]["labels"]["arqscale.io/queue"]
        spec = queues[queue]
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert set(so["spec"]) == {
            "scaleTargetRef",
            "pollingInterval",
            "cooldownPeriod",
            "minReplicaCount",
            "maxReplicaCount",
            "advanced",
            "triggers",
        }
        assert so["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": worker_name(fullname("keda"), queue),
        }
        assert so["spec"]["minReplicaCount"] == spec.autoscaling.min_replicas
        assert so["spec"]["maxReplicaCount"] == spec.autoscaling.max_replicas
        assert so["spec"]["pollingInterval"] == 10 and so["spec"]["cooldownPeriod"] == 120
        assert set(so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]) == {"behavior"}
        triggers = so["spec"]["triggers"]
        assert len(triggers) == len(spec.autoscaling.metrics)
        url = f"http://{exporter['metadata']['name']}.{NAMESPACE}.svc:{http_port}/keda/v1/queues/{quote(queue)}"
        for trigger, hint in zip(triggers, spec.autoscaling.metrics, strict=True):
            assert trigger["type"] == "metrics-api"
            assert trigger["metricType"] == "AverageValue"
            assert DNS_LABEL.match(trigger["name"])
            target = target_for(spec, hint)
            assert trigger["metadata"] == {
                "format": "json",
                "url": url,
                "valueLocation": KEDA_FIELDS[hint],
                "targetValue": quantity(target),
            }
    assert any(so["spec"]["minReplicaCount"] == 0 for so in scaled_objects), "KEDA allows scale to zero"


# Graceful shutdown --------------------------------------------------------------------------------


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_grace_period_exceeds_drain_timeout_which_covers_job_timeout(helm: str, values: str) -> None:
    docs = render(helm, values)
    configmap = one(docs, "ConfigMap", f"{fullname(values)}-queues")
    specs = parse_queues(yaml.safe_load(configmap["data"]["queues.yaml"]))
    for deployment in component(docs, "Deployment", "worker"):
        spec = specs[deployment["metadata"]["labels"]["arqscale.io/queue"]]
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert grace > spec.effective_drain_timeout >= spec.job_timeout
        assert grace - spec.effective_drain_timeout >= 5, "margin for putting cut-short jobs back"


BAD_VALUES = [
    # (helm --set arguments, text the error must contain)
    (["queues.email.concurency=5", "queues.email.functions[0]=a.b"], "concurency"),
    (["queues.email.job_timeout=-1", "queues.email.functions[0]=a.b"], "job_timeout"),
    (["queues.email.autoscaling.metrics[0]=depth", "queues.email.functions[0]=a.b"], "metrics"),
    (["queues.email.concurrency=10"], "functions"),
    (["worker.port=70000"], "port"),
    (["autoscaling.engine=cron"], "engine"),
    (["image.tag=latest"], "tag"),
    (["tracing.enabled=true"], "tracing.enabled needs tracing.endpoint"),
    (["tracing.sampler=sometimes"], "sampler"),
    (["queues.bad name.functions[0]=a.b"], "bad name"),
    # cross-field rules the template enforces, naming the queue
    (
        ["queues.payments.functions[0]=a.b", "queues.payments.job_timeout=60", "queues.payments.drain_timeout=30"],
        "queues.payments.drain_timeout",
    ),
    (
        [
            "queues.payments.functions[0]=a.b",
            "queues.payments.job_timeout=60",
            "queues.payments.worker.terminationGracePeriodSeconds=60",
        ],
        "queues.payments: terminationGracePeriodSeconds (60) must exceed the drain timeout (60)",
    ),
    (
        ["queues.payments.functions[0]=a.b", "queues.payments.autoscaling.min_replicas=0"],
        "queues.payments.autoscaling.min_replicas",
    ),
    (
        [
            "queues.payments.functions[0]=a.b",
            "queues.payments.autoscaling.min_replicas=5",
            "queues.payments.autoscaling.max_replicas=2",
        ],
        "queues.payments.autoscaling.max_replicas",
    ),
    (["autoscaling.engine=keda"], "metricsApi.enabled=false"),
    (["redis.enabled=false"], "externalRedis"),
    (["redis.enabled=false", "externalRedis.existingSecretUrlKey=url"], "externalRedis.existingSecretUrlKey"),
    (["redis.enabled=false", "externalRedis.url=http://redis:6379"], "url"),
    (["metricsApi.tls.existingSecret=my-tls"], "metricsApi.tls.caBundle"),
]


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(("sets", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_values_fail_with_the_field_or_queue_named(helm: str, sets: list[str], message: str) -> None:
    result = template_with(helm, _set_args(sets))
    assert result.returncode != 0, f"rendered despite {sets}"
    assert message in result.stderr, result.stderr


def test_a_values_file_breaking_grace_fails_naming_the_queue(tmp_path: Path) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text(
        "queues:\n"
        "  KYC.Verification:\n"
        "    functions: [app.tasks.verify]\n"
        "    job_timeout: 300\n"
        "    worker: {terminationGracePeriodSeconds: 120}\n"
    )
    for helm in HELMS:
        result = helm_template(helm, "-f", str(values))
        assert result.returncode != 0
        assert "queues.KYC.Verification: terminationGracePeriodSeconds (120)" in result.stderr


# Probes and ports ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_probe_ports_are_the_ports_the_processes_listen_on(helm: str, values: str) -> None:
    docs = render(helm, values)
    expected = {
        "worker": ("ARQSCALE_WORKER_PORT", default_port("worker_port")),
        "exporter": ("ARQSCALE_EXPORTER_PORT", default_port("exporter_port")),
        "api": ("ARQSCALE_API_PORT", default_port("api_port")),
        "webhooks": ("ARQSCALE_WEBHOOKS_PORT", default_port("webhooks_port")),
    }
    seen = set()
    for deployment in by_kind(docs, "Deployment"):
        kind = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        env_name, port = expected[kind]
        seen.add(kind)
        container = pod_spec(deployment)["containers"][0]
        assert container["args"][0] == kind
        assert env_of(container)[env_name]["value"] == str(port)
        for probe_name, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            probe = container[probe_name]["httpGet"]
            assert probe["path"] == path
            if kind == "exporter" and probe_name == "readinessProbe" and chart_values(values)["metricsApi"]["enabled"]:
                # Readiness covers the HTTPS server the API server calls (the kubelet skips verification).
                assert probe["scheme"] == "HTTPS"
                https = env_of(container)["ARQSCALE_METRICS_API_PORT"]["value"]
                assert container_port(container, probe["port"]) == int(https)
                continue
            assert container_port(container, probe["port"]) == port
        if kind == "worker" and "startupProbe" in container:
            assert container_port(container, container["startupProbe"]["httpGet"]["port"]) == port
    running = {"worker", "exporter"} | ({"api"} if chart_values(values)["api"]["enabled"] else set())
    assert seen - {"webhooks"} == running
    assert ("webhooks" in seen) == (values == "webhooks")  # on when a queue declares webhooks


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_services_target_the_listening_ports(helm: str, values: str) -> None:
    docs = render(helm, values)
    metrics_api = chart_values(values)["metricsApi"]["enabled"]
    exporter_deployment = one(docs, "Deployment", f"{fullname(values)}-exporter")
    container = pod_spec(exporter_deployment)["containers"][0]
    service = one(docs, "Service", f"{fullname(values)}-exporter")
    targets = {p["name"]: container_port(container, p["targetPort"]) for p in service["spec"]["ports"]}
    expected = {"http-metrics": default_port("exporter_port")}
    if metrics_api:
        # GKE private clusters: the control plane reaches pods on 443 and 10250 only; the aggregator
        # dials the pod's port (the Service's targetPort), not the Service port.
        expected["https"] = 10250
        assert env_of(container)["ARQSCALE_METRICS_API_PORT"]["value"] == "10250"
        assert next(p for p in service["spec"]["ports"] if p["name"] == "https")["port"] == 443
    assert targets == expected
    assert env_of(container)["ARQSCALE_METRICS_API_ENABLED"]["value"] == str(metrics_api).lower()


# External Metrics API: APIService, certificate, RBAC ---------------------------------------------


@pytest.mark.parametrize("helm", HELMS)
def test_apiservice_points_at_the_exporter_with_a_matching_ca(helm: str) -> None:
    docs = render(helm, "defaults")
    api_service = one(docs, "APIService", "v1beta1.external.metrics.k8s.io")
    service = one(docs, "Service", f"{fullname('defaults')}-exporter")
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    assert api_service["apiVersion"] == "apiregistration.k8s.io/v1"
    spec = api_service["spec"]
    assert set(spec) == {
        "group",
        "version",
        "groupPriorityMinimum",
        "versionPriority",
        "insecureSkipTLSVerify",
        "caBundle",
        "service",
    }
    assert spec["group"] == "external.metrics.k8s.io" and spec["version"] == "v1beta1"
    assert spec["insecureSkipTLSVerify"] is False
    assert 1 <= spec["groupPriorityMinimum"] <= 20000 and 1 <= spec["versionPriority"] <= 1000
    assert spec["service"] == {"name": service["metadata"]["name"], "namespace": NAMESPACE, "port": https["port"]}

    secret = one(docs, "Secret", f"{fullname('defaults')}-metrics-api-tls")
    assert secret["type"] == "kubernetes.io/tls"
    ca = x509.load_pem_x509_certificate(base64.b64decode(spec["caBundle"]))
    assert base64.b64decode(secret["data"]["ca.crt"]) == base64.b64decode(spec["caBundle"])
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    public_key = ca.public_key()
    assert cert.signature_hash_algorithm is not None
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert f"{service['metadata']['name']}.{NAMESPACE}.svc" in names, "the aggregator dials <service>.<namespace>.svc"
    # the exporter serves with exactly this Secret
    exporter = one(docs, "Deployment", f"{fullname('defaults')}-exporter")
    volumes = {v["name"]: v for v in pod_spec(exporter)["volumes"]}
    assert volumes["metrics-api-tls"]["secret"]["secretName"] == secret["metadata"]["name"]


@pytest.mark.parametrize("helm", HELMS)
def test_bring_your_own_certificate(helm: str) -> None:
    docs = render(helm, "all-on")
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"].endswith("metrics-api-tls")]
    api_service = one(docs, "APIService", "v1beta1.external.metrics.k8s.io")
    assert api_service["spec"]["caBundle"] == chart_values("all-on")["metricsApi"]["tls"]["caBundle"]
    exporter = one(docs, "Deployment", "jobs-exporter")
    volumes = {v["name"]: v for v in pod_spec(exporter)["volumes"]}
    assert volumes["metrics-api-tls"]["secret"]["secretName"] == "arqscale-metrics-api-tls"
    env = env_of(pod_spec(exporter)["containers"][0])
    assert env["ARQSCALE_METRICS_API_ALLOWED_NAMES"]["value"] == "front-proxy-client"


def rbac(docs: tuple[Doc, ...]) -> dict[str, object]:
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d["rules"]
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    bindings = {
        (d["kind"], d["metadata"].get("namespace"), d["roleRef"]["kind"], d["roleRef"]["name"]): sorted(
            (s["kind"], s["name"], s["namespace"]) for s in d["subjects"]
        )
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and "helm.sh/hook" not in d["metadata"].get("annotations", {})
    }
    return {"roles": roles, "bindings": bindings}


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_rbac_grants_exactly_what_is_listed(helm: str, values: str) -> None:
    docs = render(helm, values)
    name = fullname(values)
    worker_sa = ("ServiceAccount", f"{name}-worker", NAMESPACE)
    exporter_sa = ("ServiceAccount", f"{name}-exporter", NAMESPACE)
    reader = f"{name}-{NAMESPACE}-external-metrics-reader"
    roles: dict[object, object] = {}
    bindings: dict[object, object] = {}
    if chart_values(values)["worker"]["podDeletionCost"]["enabled"]:
        roles[("Role", None, f"{name}-worker")] = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
        bindings[("RoleBinding", None, "Role", f"{name}-worker")] = [worker_sa]
    if chart_values(values)["metricsApi"]["enabled"]:
        roles[("ClusterRole", None, reader)] = [
            {"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list"]}
        ]
        bindings |= {
            ("RoleBinding", "kube-system", "Role", "extension-apiserver-authentication-reader"): [exporter_sa],
            ("ClusterRoleBinding", None, "ClusterRole", reader): [
                ("ServiceAccount", "horizontal-pod-autoscaler", "kube-system")
            ],
        }
        assert by_kind(docs, "APIService")
    else:
        assert not by_kind(docs, "APIService")
    assert rbac(docs) == {"roles": roles, "bindings": bindings}


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_service_account_tokens_only_where_needed(helm: str, values: str) -> None:
    docs = render(helm, values)
    metrics_api = chart_values(values)["metricsApi"]["enabled"]
    client_auth = metrics_api and chart_values(values)["metricsApi"]["clientAuth"]["enabled"]
    for sa in by_kind(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    deletion_cost = chart_values(values)["worker"]["podDeletionCost"]["enabled"]
    for doc in [*by_kind(docs, "Deployment"), *by_kind(docs, "StatefulSet"), *by_kind(docs, "Pod")]:
        kind = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        needs = {"worker": deletion_cost, "test": metrics_api}.get(kind, False)
        spec = pod_spec(doc)
        assert spec["automountServiceAccountToken"] is needs, (kind, doc["metadata"]["name"])
        # The exporter's token reaches only the containers that read the front-proxy CA, never the
        # process that serves the network.
        with_token = {
            c["name"]
            for c in [*spec.get("initContainers", []), *spec["containers"]]
            for m in c.get("volumeMounts", [])
            if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
        }
        assert with_token == (
            {"front-proxy-ca", "front-proxy-ca-sync"} if kind == "exporter" and client_auth else set()
        )
        if with_token:
            (projected,) = [v["projected"] for v in spec["volumes"] if v["name"] == "kube-api-access"]
            assert [
                src["serviceAccountToken"]["path"] for src in projected["sources"] if "serviceAccountToken" in src
            ] == ["token"]


# Hardening, images, labels -----------------------------------------------------------------------


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_hardened_pods(helm: str, values: str) -> None:
    docs = render(helm, values)
    pods = [*by_kind(docs, "Deployment"), *by_kind(docs, "StatefulSet"), *by_kind(docs, "Pod")]
    assert pods
    for doc in pods:
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = container["securityContext"]
            where = f"{doc['metadata']['name']}/{container['name']}"
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["runAsNonRoot"] is True, where
            assert set(container["resources"]) >= {"requests", "limits"}, where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp must be a writable emptyDir"
            image = container["image"]
            tag = image.split("@")[0].rsplit(":", 1)
            assert len(tag) == 2 and tag[1] and tag[1] != "latest", where
            assert sc["runAsUser"] >= 999, where
            if values == "defaults" and doc["metadata"]["labels"]["app.kubernetes.io/component"] != "redis":
                assert sc["runAsUser"] == 10001, where


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_images(helm: str, values: str) -> None:
    docs = render(helm, values)
    for doc in [*by_kind(docs, "Deployment"), *by_kind(docs, "Pod")]:
        kind = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        for container in [*pod_spec(doc).get("initContainers", []), *pod_spec(doc)["containers"]]:
            repo = container["image"].split("@")[0].rsplit(":", 1)[0]
            assert repo.rsplit("/", 1)[-1] == ("arqscale-worker" if kind == "worker" else "arqscale")


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_selectors_are_stable_labels_only(helm: str, values: str) -> None:
    docs = render(helm, values)
    allowed = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "arqscale.io/queue",
    }
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert "app.kubernetes.io/component" in labels, doc["metadata"]["name"]
        if doc["kind"] in ("Deployment", "StatefulSet"):
            selector = doc["spec"]["selector"]["matchLabels"]
            assert set(selector) <= allowed
            assert set(selector) >= {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        if doc["kind"] == "Service":
            assert set(doc["spec"]["selector"]) <= allowed
    # no two workloads select each other's pods
    selectors = [
        frozenset(d["spec"]["selector"]["matchLabels"].items())
        for d in [*by_kind(docs, "Deployment"), *by_kind(docs, "StatefulSet")]
    ]
    assert len(selectors) == len(set(selectors))


# Queue names --------------------------------------------------------------------------------------


def test_queue_slugs_are_dns_safe_unique_and_stable() -> None:
    names = ["email", "Email", "e_mail", "e-mail", "e.mail", "image_processing", "KYC.Verification", "a" * 63, "A" * 63]
    slugs = [queue_slug(n) for n in names]
    assert len(set(slugs)) == len(slugs)
    for name, slug in zip(names, slugs, strict=True):
        assert DNS_LABEL.match(slug) and len(slug) <= 49, slug
        assert slug == queue_slug(name)
        assert (slug == name) == bool(DNS_LABEL.match(name) and len(name) <= 40)
    assert queue_slug("email") == "email"
    assert queue_slug("image_processing").startswith("image-processing-")
    assert queue_slug("KYC.Verification").startswith("kyc-verification-")
    assert len(worker_name("x" * 63, "a" * 63)) <= 63


@pytest.mark.parametrize("helm", HELMS)
def test_non_dns_queue_names_keep_their_real_name_in_labels_and_selectors(helm: str) -> None:
    docs = render(helm, "non-dns-queues")
    for name in ("image_processing", "KYC.Verification", "Reports_v2"):
        deployment = one(docs, "Deployment", worker_name(fullname("non-dns-queues"), name))
        assert deployment["metadata"]["name"] != f"{fullname('non-dns-queues')}-worker-{name}"
        assert deployment["spec"]["template"]["metadata"]["labels"]["arqscale.io/queue"] == name
    hpa = one(docs, "HorizontalPodAutoscaler", worker_name(fullname("non-dns-queues"), "KYC.Verification"))
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"] == {"queue": "KYC.Verification"}
    # names do not depend on the other queues: the same queue renders the same name in every file
    assert worker_name(fullname("defaults"), "image_processing") in {
        d["metadata"]["name"] for d in component(render(helm, "defaults"), "Deployment", "worker")
    }


# Per-queue overrides, config and rollouts ---------------------------------------------------------


@pytest.mark.parametrize("helm", HELMS)
def test_per_queue_overrides_fall_back_to_chart_defaults(helm: str) -> None:
    docs = render(helm, "non-dns-queues")
    defaults = chart_values("non-dns-queues")["worker"]
    images = one(docs, "Deployment", worker_name(fullname("non-dns-queues"), "image_processing"))
    kyc = one(docs, "Deployment", worker_name(fullname("non-dns-queues"), "KYC.Verification"))
    reports = one(docs, "Deployment", worker_name(fullname("non-dns-queues"), "Reports_v2"))
    c_images, c_kyc, c_reports = (pod_spec(d)["containers"][0] for d in (images, kyc, reports))
    assert c_images["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert c_kyc["resources"] == defaults["resources"]
    assert pod_spec(images)["nodeSelector"] == {"workload": "images"}
    assert "nodeSelector" not in pod_spec(kyc)
    assert pod_spec(images)["tolerations"][0]["key"] == "gpu"
    assert env_of(c_kyc)["KYC_PROVIDER"]["value"] == "sandbox" and "KYC_PROVIDER" not in env_of(c_images)
    assert pod_spec(kyc)["terminationGracePeriodSeconds"] == 200
    assert c_kyc["readinessProbe"]["periodSeconds"] == 2 and c_kyc["readinessProbe"]["failureThreshold"] == 3
    assert c_images["readinessProbe"] == defaults["readinessProbe"]
    assert c_kyc["livenessProbe"] == defaults["livenessProbe"]
    assert c_reports["image"] == "ghcr.io/arqscale/arqscale-worker:0.1.0-reports"
    assert c_images["image"] == "ghcr.io/arqscale/arqscale-worker:0.1.0"
    assert c_images["securityContext"] == defaults["securityContext"]


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_queues_configmap_is_a_valid_queues_file_without_chart_keys(helm: str, values: str) -> None:
    docs = render(helm, values)
    configmap = one(docs, "ConfigMap", f"{fullname(values)}-queues")
    data = yaml.safe_load(configmap["data"]["queues.yaml"])
    expected = {n: {k: v for k, v in q.items() if k != "worker"} for n, q in effective_queues(values).items()}
    assert data == {"queues": expected}
    assert parse_queues(data)  # the worker's own validation accepts it


def test_default_queues_are_the_demo_queues() -> None:
    assert chart_values("defaults")["queues"] == {}
    assert parse_queues({"queues": effective_queues("defaults")}) == parse_queues(DEMO_QUEUES)


@pytest.mark.parametrize("helm", HELMS)
def test_checksum_rolls_only_the_changed_queues_pods(helm: str) -> None:
    base = list(render(helm, "non-dns-queues"))
    path = str(VALUES["non-dns-queues"])
    changed = parse_docs(helm_template(helm, "-f", path, "--set", "queues.Reports_v2.job_timeout=900").stdout)

    def annotations(docs: list[Doc]) -> dict[str, dict[str, str]]:
        return {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"] for d in by_kind(docs, "Deployment")
        }

    before, after = annotations(base), annotations(changed)
    reports = worker_name(fullname("non-dns-queues"), "Reports_v2")
    images = worker_name(fullname("non-dns-queues"), "image_processing")
    assert before[reports]["checksum/queue"] != after[reports]["checksum/queue"]
    assert before[images]["checksum/queue"] == after[images]["checksum/queue"]
    exporter = f"{fullname('non-dns-queues')}-exporter"
    assert before[exporter]["checksum/queues"] != after[exporter]["checksum/queues"]


# Redis --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("helm", HELMS)
def test_embedded_redis(helm: str) -> None:
    docs = render(helm, "defaults")
    (sts,) = by_kind(docs, "StatefulSet")
    (container,) = pod_spec(sts)["containers"]
    assert re.fullmatch(r"docker\.io/library/redis:\d+\.\d+\.\d+-alpine", container["image"])
    script = container["args"][0]
    assert "--appendonly yes" in script and "$REDIS_PASSWORD" in script and "requirepass" in script
    assert "REDIS_PASSWORD" not in "".join(container.get("command", [])), "never on argv"
    assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(container)
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    secret = one(docs, "Secret", f"{fullname('defaults')}-redis")
    assert len(base64.b64decode(secret["data"]["redis-password"])) == 32
    # every process reads the same Secret and Service
    service = one(docs, "Service", f"{fullname('defaults')}-redis")
    for deployment in by_kind(docs, "Deployment"):
        env = env_of(pod_spec(deployment)["containers"][0])
        assert env["REDIS_HOST"]["value"] == service["metadata"]["name"]
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": secret["metadata"]["name"],
            "key": "redis-password",
        }


@pytest.mark.parametrize("helm", HELMS)
def test_external_redis_with_tls_and_an_existing_secret(helm: str) -> None:
    docs = render(helm, "external-redis-tls")
    assert not by_kind(docs, "StatefulSet")
    assert not [d for d in by_kind(docs, "Secret") if "redis" in d["metadata"]["name"]]
    processes = [*by_kind(docs, "Deployment"), *by_kind(docs, "Pod")]
    for doc in processes:
        container = pod_spec(doc)["containers"][0]
        env = env_of(container)
        assert env["REDIS_HOST"]["value"] == "redis.example.internal"
        assert env["REDIS_PORT"]["value"] == "6380"
        assert env["REDIS_DB"]["value"] == "2"
        assert env["REDIS_USERNAME"]["value"] == "arqscale"
        assert env["REDIS_TLS"]["value"] == "true"
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "arqscale-redis-credentials",
            "key": "password",
        }
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
        assert env["REDIS_TLS_CA_FILE"]["value"] == f"{mounts['redis-tls-ca']}/ca.crt"
        assert volumes["redis-tls-ca"]["secret"]["secretName"] == "arqscale-redis-ca"
        assert env["REDIS_TLS_CERT_FILE"]["value"] == f"{mounts['redis-tls-client']}/tls.crt"
        assert env["REDIS_TLS_KEY_FILE"]["value"] == f"{mounts['redis-tls-client']}/tls.key"
        assert volumes["redis-tls-client"]["secret"]["secretName"] == "arqscale-redis-client"


@pytest.mark.parametrize("helm", HELMS)
def test_external_redis_url_is_kept_in_a_secret(helm: str) -> None:
    url = "rediss://user:s3cret@redis.example:6380/0"
    result = helm_template(helm, "--set", "redis.enabled=false", "--set", f"externalRedis.url={url}")
    assert result.returncode == 0, result.stderr
    docs = parse_docs(result.stdout)
    secret = one(docs, "Secret", f"{RELEASE}-arqscale-redis-external")
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == url
    assert "s3cret" not in "".join(str(d) for d in docs if d["kind"] != "Secret")
    for deployment in by_kind(docs, "Deployment"):
        env = env_of(pod_spec(deployment)["containers"][0])
        assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
        assert "REDIS_HOST" not in env


# Extras -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("helm", HELMS)
def test_network_policy_lets_only_arqscale_reach_redis(helm: str) -> None:
    docs = render(helm, "all-on")
    (policy,) = by_kind(docs, "NetworkPolicy")
    (sts,) = by_kind(docs, "StatefulSet")
    assert policy["spec"]["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    expressions = {e["key"]: e["values"] for e in peer["podSelector"]["matchExpressions"]}
    assert expressions == {
        "app.kubernetes.io/name": ["arqscale"],
        "app.kubernetes.io/instance": [RELEASE],
        "app.kubernetes.io/component": ["worker", "api", "exporter", "webhooks", "test"],
    }
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    assert not by_kind(render(helm, "defaults"), "NetworkPolicy")


@pytest.mark.parametrize("helm", HELMS)
def test_service_monitor(helm: str) -> None:
    docs = render(helm, "all-on")
    (monitor,) = by_kind(docs, "ServiceMonitor")
    service = one(docs, "Service", "jobs-exporter")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "http-metrics",
        "path": "/metrics",
        "scheme": "http",
        "interval": "15s",
        "scrapeTimeout": "10s",
    }
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert not by_kind(render(helm, "defaults"), "ServiceMonitor")
    (pod_monitor,) = by_kind(docs, "PodMonitor")
    assert pod_monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pod_monitor["spec"]) == {"selector", "namespaceSelector", "podMetricsEndpoints"}
    workers = component(docs, "Deployment", "worker")
    assert workers
    for deployment in workers:
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        (container,) = pod_spec(deployment)["containers"]
        (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in {p["name"] for p in container["ports"]}
        assert container_port(container, endpoint["port"]) == default_port("worker_port")
        assert endpoint["path"] == "/metrics"
    assert not by_kind(render(helm, "defaults"), "PodMonitor")


@pytest.mark.parametrize(("helm", "values"), CASES, ids=CASE_IDS)
def test_helm_test_pod_checks_redis_and_the_metrics_api(helm: str, values: str) -> None:
    docs = render(helm, values)
    (pod,) = by_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    script = container["args"][0]
    compile(script, "helm-test", "exec")  # the embedded check is valid Python
    env = env_of(container)
    assert "ping()" in script and "/apis/external.metrics.k8s.io/v1beta1/namespaces/" in script
    assert env["METRICS_API"]["value"] == str(chart_values(values)["metricsApi"]["enabled"]).lower()
    assert env["KEDA"]["value"] == str(engine(values) == "keda").lower()
    assert {"REDIS_HOST", "REDIS_URL", "REDIS_SENTINELS", "REDIS_CLUSTER_NODES"} & set(env)


@pytest.mark.parametrize("helm", HELMS)
def test_bullmq_queues_are_counted_not_run(helm: str) -> None:
    docs = render(helm, "all-on")
    labels = [d["metadata"]["labels"].get("arqscale.io/queue") for d in docs]
    assert "legacy_orders" not in labels
    configmap = one(docs, "ConfigMap", "jobs-queues")
    assert "legacy_orders" in configmap["data"]["queues.yaml"]


@pytest.mark.parametrize("helm", HELMS)
def test_packaged_chart_renders_like_the_directory(helm: str, tmp_path: Path) -> None:
    packaged = run_tool(helm, "package", str(CHART), "--destination", str(tmp_path))
    assert packaged.returncode == 0, packaged.stderr
    (archive,) = tmp_path.glob("arqscale-*.tgz")
    result = run_tool(helm, "template", RELEASE, str(archive), "--namespace", NAMESPACE)
    assert result.returncode == 0, result.stderr
    names = sorted((d["kind"], d["metadata"]["name"]) for d in parse_docs(result.stdout) if d["kind"] != "Secret")
    expected = sorted((d["kind"], d["metadata"]["name"]) for d in render(helm, "defaults") if d["kind"] != "Secret")
    assert names == expected  # files/demo-queues.yaml travels with the package


@pytest.mark.parametrize("values", ["defaults", "keda", "non-dns-queues"])
def test_notes_tell_how_to_watch_the_autoscaling_and_read_the_metrics(values: str) -> None:
    # helm 3's `install --dry-run=client` still asks a cluster for its version; helm 4 renders NOTES offline.
    helm = "helm4"
    path = VALUES[values]
    result = run_tool(
        helm, "install", "--dry-run=client", RELEASE, str(CHART), "--namespace", NAMESPACE,
        *(["-f", str(path)] if path else []),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("\nNOTES:\n", 1)[1]
    for name in arq_queues(values):
        assert f"{name} -> deployment/{worker_name(fullname(values), name)}" in notes
    first = sorted(effective_queues(values))[0]
    if chart_values(values)["metricsApi"]["enabled"]:
        raw = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/arqscale_queue_backlog"
        assert f'kubectl get --raw "{raw}?labelSelector=queue%3D{first}"' in notes
        assert "arqscale_queue_backlog" in SERVED_METRICS
    if engine(values) == "keda":
        assert "get scaledobjects,hpa" in notes and f"/keda/v1/queues/{first}" in notes
    else:
        assert f"get hpa -l app.kubernetes.io/instance={RELEASE} -w" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes
