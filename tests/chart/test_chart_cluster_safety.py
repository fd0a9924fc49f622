"""Issue 18: the chart on real clusters. Rendered by helm 3 and helm 4, checked with strict schemas and,
for the admission policy, its CEL expressions evaluated by a CEL implementation (cel-python)."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import celpy
import pytest
import redis

from chart_support import (
    HELMS,
    NAMESPACE,
    RELEASE,
    Doc,
    by_kind,
    component,
    ensure_tools,
    env_of,
    one,
    parse_docs,
    pod_spec,
    render,
    template_with,
    validation_errors,
)
from redis_server import free_port

VAP = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
FULLNAME = f"{RELEASE}-arqscale"


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    ensure_tools()


def rendered(helm: str, *args: str) -> list[Doc]:
    result = template_with(helm, tuple(args))
    assert result.returncode == 0, result.stderr
    return parse_docs(result.stdout)


def failure(helm: str, *args: str) -> str:
    result = template_with(helm, tuple(args))
    assert result.returncode != 0
    return result.stderr


# 1. Deletion cost: off by default; when on, confined by a ValidatingAdmissionPolicy -----------------


@pytest.mark.parametrize("helm", HELMS)
def test_deletion_cost_is_off_by_default(helm: str) -> None:
    docs = render(helm, "defaults")
    assert not by_kind(docs, "Role") and not by_kind(docs, "ValidatingAdmissionPolicy")
    for worker in component(docs, "Deployment", "worker"):
        assert pod_spec(worker)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("helm", HELMS)
def test_enabling_it_without_admission_policies_fails_with_the_choice(helm: str) -> None:
    message = failure(helm, "--set", "worker.podDeletionCost.enabled=true")
    assert "worker.podDeletionCost.enabled" in message and "allowWithoutAdmissionPolicy" in message
    docs = rendered(
        helm,
        "--set",
        "worker.podDeletionCost.enabled=true",
        "--set",
        "worker.podDeletionCost.allowWithoutAdmissionPolicy=true",
    )
    assert by_kind(docs, "Role") and not by_kind(docs, "ValidatingAdmissionPolicy")


def policy_docs(helm: str) -> tuple[Doc, Doc, list[Doc]]:
    docs = rendered(helm, "--set", "worker.podDeletionCost.enabled=true", "--api-versions", VAP)
    (policy,) = by_kind(docs, "ValidatingAdmissionPolicy")
    (binding,) = by_kind(docs, "ValidatingAdmissionPolicyBinding")
    return policy, binding, docs


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_the_policy_is_valid_where_it_is_rendered(helm: str, version: str) -> None:
    policy, binding, docs = policy_docs(helm)
    assert validation_errors([policy, binding], version) == []
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"] and policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}
    }
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["pods"] and rule["operations"] == ["UPDATE"]  # a PATCH is an UPDATE
    for worker in component(docs, "Deployment", "worker"):
        assert pod_spec(worker)["automountServiceAccountToken"] is True


class Policy:
    """The rendered policy's CEL, evaluated as the API server does: match conditions, variables, validations."""

    def __init__(self, policy: Doc) -> None:
        self.env = celpy.Environment()
        self.spec = policy["spec"]

    def _eval(self, expression: str, activation: dict[str, Any]) -> Any:
        return self.env.program(self.env.compile(expression)).evaluate(activation)

    def admits(self, old: Doc, new: Doc, username: str, pod_name: str | None) -> bool:
        extra = {"authentication.kubernetes.io/pod-name": [pod_name]} if pod_name else {}
        request = {"userInfo": {"username": username, "extra": extra}}
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(new),
            "oldObject": celpy.json_to_cel(old),
            "request": celpy.json_to_cel(request),
        }
        if not all(self._eval(c["expression"], activation) for c in self.spec["matchConditions"]):
            return True  # not the workers' account: the policy does not apply
        variables: dict[Any, Any] = {}
        for variable in self.spec["variables"]:
            activation["variables"] = celpy.celtypes.MapType(variables)
            variables[celpy.celtypes.StringType(variable["name"])] = self._eval(variable["expression"], activation)
        activation["variables"] = celpy.celtypes.MapType(variables)
        return all(bool(self._eval(v["expression"], activation)) for v in self.spec["validations"])


WORKER_SA = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}-worker"
POD: Doc = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "worker-email-7d9f-abcde",
        "namespace": NAMESPACE,
        "labels": {"app.kubernetes.io/component": "worker", "arqscale.io/queue": "email"},
        "annotations": {"checksum/queue": "abc"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "1"}],
    },
    "spec": {"containers": [{"name": "worker", "image": "arqscale-worker:1"}]},
}


def changed(**edits: Any) -> Doc:
    pod = copy.deepcopy(POD)
    for path, value in edits.items():
        node = pod
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return pod


@pytest.mark.parametrize("helm", HELMS)
def test_the_policy_admits_only_the_deletion_cost_of_the_own_pod(helm: str) -> None:
    policy = Policy(policy_docs(helm)[0])
    own = POD["metadata"]["name"]
    with_cost = changed(metadata__annotations={"checksum/queue": "abc", DELETION_COST: "1000"})
    # What the worker sends: admitted (set, changed, removed).
    assert policy.admits(POD, with_cost, WORKER_SA, own)
    assert policy.admits(
        with_cost, changed(metadata__annotations={"checksum/queue": "abc", DELETION_COST: "-1000"}), WORKER_SA, own
    )
    assert policy.admits(with_cost, POD, WORKER_SA, own)
    # Another pod, or a token without the pod claim: denied.
    other = changed(metadata__name="api-5c4d-xyz")
    other_with_cost = copy.deepcopy(other)
    other_with_cost["metadata"]["annotations"][DELETION_COST] = "1000"
    assert not policy.admits(other, other_with_cost, WORKER_SA, own)
    assert not policy.admits(POD, with_cost, WORKER_SA, None)
    # Anything else on the own pod: denied.
    attacks = {
        "image": changed(spec__containers=[{"name": "worker", "image": "evil:1"}]),
        "label into another selector": changed(metadata__labels={"app.kubernetes.io/component": "exporter"}),
        "label removed": changed(metadata__labels={"app.kubernetes.io/component": "worker"}),
        "another annotation": changed(metadata__annotations={"checksum/queue": "abc", "x": "y"}),
        "annotation removed": changed(metadata__annotations={}),
        "orphaned from its ReplicaSet": changed(metadata__ownerReferences=[]),
        "finalizer": changed(metadata__finalizers=["example.com/block"]),
    }
    for what, pod in attacks.items():
        assert not policy.admits(POD, pod, WORKER_SA, own), what
    # Other accounts (the ReplicaSet controller, users) are not this policy's business.
    assert policy.admits(POD, attacks["image"], "system:serviceaccount:kube-system:replicaset-controller", None)


# 2-3. The exporter: no token, no auth-delegator, two replicas, PDB, spread -------------------------------


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize("values", ["defaults", "all-on", "cert-manager", "kind"])
def test_no_auth_delegator_and_no_token_in_the_exporter_container(helm: str, values: str) -> None:
    docs = render(helm, values)
    assert not [d for d in docs if d["kind"].endswith("Binding") and d["roleRef"]["name"] == "system:auth-delegator"]
    exporter = one(docs, "Deployment", f"{FULLNAME if values != 'all-on' else 'jobs'}-exporter")
    main = pod_spec(exporter)["containers"][0]
    assert main["name"] == "exporter"
    assert not [m for m in main["volumeMounts"] if "serviceaccount" in m["mountPath"]]
    assert pod_spec(exporter)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("helm", HELMS)
def test_exporter_spread_over_nodes_and_zones(helm: str) -> None:
    exporter = one(render(helm, "defaults"), "Deployment", f"{FULLNAME}-exporter")
    spread = pod_spec(exporter)["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    for constraint in spread:
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # never leaves a replica Pending
        assert constraint["labelSelector"]["matchLabels"] == exporter["spec"]["selector"]["matchLabels"]
    custom = one(render(helm, "all-on"), "Deployment", "jobs-exporter")
    assert "topologySpreadConstraints" not in pod_spec(custom) and custom["spec"]["replicas"] == 3


@pytest.mark.parametrize("helm", HELMS)
def test_front_proxy_ca_init_and_sidecar(helm: str) -> None:
    exporter = one(render(helm, "defaults"), "Deployment", f"{FULLNAME}-exporter")
    spec = pod_spec(exporter)
    (init,) = spec["initContainers"]
    sidecar = next(c for c in spec["containers"] if c["name"] == "front-proxy-ca-sync")
    assert init["command"][:3] == sidecar["command"][:3] == ["python", "-m", "arqscale.exporter.front_proxy_ca"]
    assert "--once" in init["command"] and "--interval" in sidecar["command"]
    out = "/etc/arqscale/front-proxy/ca.crt"
    assert out in init["command"] and out in sidecar["command"]
    main = spec["containers"][0]
    assert env_of(main)["ARQSCALE_METRICS_API_CLIENT_CA_FILE"]["value"] == out
    assert env_of(main)["ARQSCALE_METRICS_API_TLS_RELOAD_SECONDS"]["value"] == "10"


# 4. Certificates: a checksum that rolls the pods; cert-manager --------------------------------------------


@pytest.mark.parametrize("helm", HELMS)
def test_pods_carry_the_checksum_of_the_generated_pair(helm: str) -> None:
    def checksum_and_secret(docs: list[Doc] | tuple[Doc, ...]) -> tuple[str, str]:
        exporter = one(docs, "Deployment", f"{FULLNAME}-exporter")
        secret = one(docs, "Secret", f"{FULLNAME}-metrics-api-tls")
        expected = hashlib.sha256((secret["data"]["tls.crt"] + secret["data"]["tls.key"]).encode()).hexdigest()
        return exporter["spec"]["template"]["metadata"]["annotations"]["checksum/metrics-api-tls"], expected

    first, expected = checksum_and_secret(render(helm, "defaults"))
    assert first == expected
    # Every `helm template` makes a new pair (no lookup): the pod template changes with it.
    second, expected_second = checksum_and_secret(rendered(helm, "--set", "exporter.refreshSeconds=1"))
    assert second == expected_second != first


@pytest.mark.parametrize("helm", HELMS)
def test_cert_manager_issues_the_pair_and_fills_the_ca_bundle(helm: str) -> None:
    docs = render(helm, "cert-manager")
    api_service = one(docs, "APIService", "v1beta1.external.metrics.k8s.io")
    assert "caBundle" not in api_service["spec"]
    certificate = one(docs, "Certificate", f"{FULLNAME}-metrics-api-tls")
    assert api_service["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/{certificate['metadata']['name']}"
    )
    assert not [s for s in by_kind(docs, "Secret") if s["metadata"]["name"].endswith("metrics-api-tls")]
    exporter = one(docs, "Deployment", f"{FULLNAME}-exporter")
    volumes = {v["name"]: v for v in pod_spec(exporter)["volumes"]}
    assert volumes["metrics-api-tls"]["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert "checksum/metrics-api-tls" not in exporter["spec"]["template"]["metadata"]["annotations"]
    service = f"{FULLNAME}-exporter"
    assert f"{service}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert "server auth" in certificate["spec"]["usages"]
    # the self-signed CA chain the chart makes when no issuerRef is given
    issuer = certificate["spec"]["issuerRef"]
    ca_issuer = one(docs, "Issuer", issuer["name"])
    ca_cert = one(docs, "Certificate", ca_issuer["spec"]["ca"]["secretName"])
    assert (
        ca_cert["spec"]["isCA"] is True
        and "selfSigned" in one(docs, "Issuer", ca_cert["spec"]["issuerRef"]["name"])["spec"]
    )
    own = rendered(
        helm, "--set", "metricsApi.tls.certManager.enabled=true",
        "--set", "metricsApi.tls.certManager.issuerRef.name=corp-ca",
        "--set", "metricsApi.tls.certManager.issuerRef.kind=ClusterIssuer",
    )  # fmt: skip
    assert not by_kind(own, "Issuer")
    (cert,) = by_kind(own, "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


# 7. Namespaces the metrics API answers for --------------------------------------------------------------


@pytest.mark.parametrize("helm", HELMS)
def test_the_exporter_answers_only_for_the_release_namespace_by_default(helm: str) -> None:
    def namespaces(docs: list[Doc] | tuple[Doc, ...], name: str) -> str:
        exporter = one(docs, "Deployment", f"{name}-exporter")
        return str(env_of(pod_spec(exporter)["containers"][0])["ARQSCALE_METRICS_API_NAMESPACES"]["value"])

    assert namespaces(render(helm, "defaults"), FULLNAME) == NAMESPACE
    assert namespaces(render(helm, "all-on"), "jobs") == "work,work-staging"


# 8. Ports: GKE private clusters ----------------------------------------------------------------------------


@pytest.mark.parametrize("helm", HELMS)
def test_the_api_server_dials_a_port_gke_private_clusters_allow(helm: str) -> None:
    docs = render(helm, "defaults")
    api_service = one(docs, "APIService", "v1beta1.external.metrics.k8s.io")
    service = one(docs, "Service", api_service["spec"]["service"]["name"])
    port = next(p for p in service["spec"]["ports"] if p["port"] == api_service["spec"]["service"]["port"])
    container = pod_spec(one(docs, "Deployment", f"{FULLNAME}-exporter"))["containers"][0]
    target = next(p["containerPort"] for p in container["ports"] if p["name"] == port["targetPort"])
    assert port["port"] == 443 and target in (443, 10250)


# 9. unhealthyPodEvictionPolicy where the API server has it -----------------------------------------------


@pytest.mark.parametrize("helm", HELMS)
def test_unhealthy_pod_eviction_policy_follows_the_kube_version(helm: str) -> None:
    for version, present in (("1.26.0", False), ("1.27.0", True), ("1.29.0", True)):
        docs = rendered(helm, "--kube-version", version)
        pdbs = component(docs, "PodDisruptionBudget", "worker")
        assert pdbs
        assert all(("unhealthyPodEvictionPolicy" in p["spec"]) is present for p in pdbs), version
        if present:
            assert validation_errors(pdbs, version) == []
    docs = rendered(helm, "--set", "worker.podDisruptionBudget.unhealthyPodEvictionPolicy=")
    assert all("unhealthyPodEvictionPolicy" not in p["spec"] for p in component(docs, "PodDisruptionBudget", "worker"))


# 11. The built-in Redis takes any password --------------------------------------------------------------


def redis_shell_command(docs: tuple[Doc, ...] | list[Doc], port: int, data: Path) -> str:
    (statefulset,) = by_kind(docs, "StatefulSet")
    container = pod_spec(statefulset)["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    assert "--port 6379 --dir /data" in script and "$REDIS_PASSWORD" in script
    return str(script.replace("--port 6379 --dir /data", f"--port {port} --dir {data} --bind 127.0.0.1"))


@pytest.mark.parametrize(
    "password",
    ['with"quote', "back\\slash", "ends\\", "it's", "$(id) `id` ${HOME}", "sp ace\ttab", "ünïcode-€", "all\"\\'$`"],
)
def test_redis_requirepass_survives_any_password(password: str, tmp_path: Path) -> None:
    port = free_port()
    script = redis_shell_command(render("helm3", "defaults"), port, tmp_path)
    log = tmp_path / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", script],
            env={"PATH": os.environ["PATH"], "REDIS_PASSWORD": password},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        client = redis.Redis(port=port, password=password, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client.ping() is True
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        proc.stdout.read().decode() if proc.stdout else "redis did not start"
                    ) from None
                time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password=password + "x").ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


# 6. Someone else owns the APIService: only a live cluster can tell (lookup) -----------------------------


def test_the_apiservice_check_is_in_the_chart() -> None:
    """`lookup` answers nothing under `helm template`; the check's wording is pinned here, docs/kubernetes.md
    explains it. The render must still succeed without a cluster."""
    source = (Path(__file__).resolve().parents[2] / "helm/arqscale/templates/metrics-api.yaml").read_text()
    assert 'lookup "apiregistration.k8s.io/v1" "APIService" "" "v1beta1.external.metrics.k8s.io"' in source
    assert "meta.helm.sh/release-name" in source and "metricsApi.enabled=false" in source
    assert render("helm4", "defaults")
