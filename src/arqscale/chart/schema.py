"""The Helm chart's ``values.schema.json``, generated from the queue model, and the chart's naming rule.

A queue entry under ``queues:`` is validated by the JSON Schema of :class:`arqscale.core.spec.QueueSpec`
(its ``name`` comes from the map key) plus the chart-only ``worker:`` override map; the rest of the
schema describes the chart's own values. ``arqscale schema`` prints it; a test keeps
``helm/arqscale/values.schema.json`` equal to :func:`render`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from arqscale.core.spec import QUEUE_NAME_RE, QueueSpec

Schema = dict[str, Any]

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"

# Metric hint (queues.X.autoscaling.metrics) -> the exporter's gauge / External Metrics API name.
HPA_METRICS: dict[str, str] = {
    "waiting": "bullmq_queue_waiting",
    "backlog": "arqscale_queue_backlog",
    "oldest_waiting": "arqscale_queue_oldest_waiting_seconds",
    "wait_target": "arqscale_queue_wait_target_workers",
}
# Metric hint -> field of the exporter's /keda/v1/queues/<name> JSON (KEDA metrics-api valueLocation).
KEDA_FIELDS: dict[str, str] = {
    "waiting": "waiting",
    "backlog": "backlog",
    "oldest_waiting": "oldest_waiting_seconds",
    "wait_target": "wait_target_workers",
}


# host:port (IPv6 in brackets), as REDIS_SENTINELS and REDIS_CLUSTER_NODES take them (settings.parse_addresses).
_ADDRESS = r"^(\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]]+)(:[0-9]{1,5})?$"


def queue_slug(name: str) -> str:
    """DNS-safe, stable, unique form of a queue name (the chart's ``arqscale.queueSlug``).

    Lowercase, runs of other characters become ``-``, at most 40 characters; when that changed the
    name, ``-`` and 8 hex digits of the name's SHA-256 follow, so ``Email`` and ``email`` differ.
    """
    dashed = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    short = re.sub(r"-+", "-", dashed).strip("-")[:40].rstrip("-")
    if short == name:
        return short
    return f"{short}-{_sha8(name)}"


def worker_name(fullname: str, queue: str) -> str:
    """Name of a queue's Deployment, HPA/ScaledObject and PDB (the chart's ``arqscale.workerName``)."""
    name = f"{fullname}-worker-{queue_slug(queue)}"
    if len(name) > 63:
        return f"{name[:54].rstrip('-')}-{_sha8(name)}"
    return name


def _sha8(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# Building blocks ------------------------------------------------------------------------------


def _obj(properties: dict[str, Schema], description: str | None = None, *, required: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if description:
        schema["description"] = description
    if required:
        schema["required"] = required
    return schema


def _t(kind: str | list[str], description: str | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": kind, **extra}
    if description:
        schema["description"] = description
    return schema


_PORT = _t("integer", minimum=1, maximum=65535)
_K8S_OBJECT = _t("object", "a Kubernetes object of this field's type, as in a pod spec")
_K8S_LIST = _t("array", items={"type": "object"})
_SECRET_NAME = _t("string", "a Secret's name", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", maxLength=253)
_STRING_MAP = _t("object", additionalProperties={"type": "string"})
_NAME = _t("string", pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", maxLength=253)


def _image(required: bool) -> Schema:
    props: dict[str, Schema] = {
        "repository": _t("string", minLength=1),
        "tag": _t("string", "empty: the chart's appVersion; never latest", **{"not": {"const": "latest"}}),
        "digest": _t("string", pattern=r"^(sha256:[a-f0-9]{64})?$"),
        "pullPolicy": _t("string", enum=["Always", "IfNotPresent", "Never"]),
    }
    return _obj(props, required=list(props) if required else None)


def _service_account() -> Schema:
    return _obj({"create": _t("boolean"), "name": _NAME, "annotations": _STRING_MAP}, required=["create"])


def _resources() -> Schema:
    quantities = _t("object", additionalProperties={"type": ["string", "number"]})
    return _obj({"requests": quantities, "limits": quantities, "claims": _K8S_LIST})


def _pod_fields() -> dict[str, Schema]:
    """Fields every process's values share (resources, probes, security, placement)."""
    return {
        "resources": _resources(),
        "livenessProbe": _K8S_OBJECT,
        "readinessProbe": _K8S_OBJECT,
        "podSecurityContext": _K8S_OBJECT,
        "securityContext": _K8S_OBJECT,
        "env": _K8S_LIST,
        "podAnnotations": _STRING_MAP,
        "podLabels": _STRING_MAP,
        "nodeSelector": _STRING_MAP,
        "tolerations": _K8S_LIST,
        "affinity": _K8S_OBJECT,
    }


def _worker_overrides() -> dict[str, Schema]:
    """What a queue's ``worker:`` map may override (and the chart-wide ``worker:`` defaults)."""
    return {
        "image": _image(required=False),
        "replicas": _t("integer", "replicas when the queue's autoscaling is off", minimum=0),
        "terminationGracePeriodSeconds": {
            "type": ["integer", "null"],
            "minimum": 1,
            "description": "null: drain timeout + shutdownMarginSeconds; must exceed the drain timeout",
        },
        "shutdownMarginSeconds": _t("integer", minimum=1),
        **_pod_fields(),
        "startupProbe": _K8S_OBJECT,
        "envFrom": _K8S_LIST,
        "topologySpreadConstraints": _K8S_LIST,
        "priorityClassName": _t("string"),
        "podDisruptionBudget": _obj(
            {
                "enabled": _t("boolean"),
                "maxUnavailable": {"type": ["integer", "string"], "minimum": 0},
                "unhealthyPodEvictionPolicy": _t(
                    "string",
                    "policy/v1 PDB field (Kubernetes 1.27+; empty: omitted, the API server's IfHealthyBudget)",
                    enum=["", "AlwaysAllow", "IfHealthyBudget"],
                ),
            }
        ),
    }


def _bullmq_worker() -> dict[str, Schema]:
    """A ``backend: bullmq`` queue's Node workers: an existing Deployment to scale, or a command to run."""
    argv = _t("array", items={"type": "string"}, minItems=1)
    return {
        "existingDeployment": _obj(
            {
                "name": {**_NAME, "minLength": 1, "description": "the Deployment the HPA/ScaledObject scales"},
                "matchLabels": {
                    **_STRING_MAP,
                    "description": "its pods' labels (spec.selector.matchLabels), for the PodDisruptionBudget",
                },
            },
            "bullmq only: scale this existing Deployment of BullMQ workers instead of running one",
            required=["name"],
        ),
        "command": {**argv, "description": "bullmq only: the chart runs worker.image with this command"},
        "args": _t("array", "bullmq only: arguments after command", items={"type": "string"}),
    }


def _process(port_description: str) -> dict[str, Schema]:
    return {
        "replicas": _t("integer", minimum=0),
        "port": {**_PORT, "description": port_description},
        "service": _obj(
            {"type": _t("string", enum=["ClusterIP", "NodePort", "LoadBalancer"]), "annotations": _STRING_MAP}
        ),
        **_pod_fields(),
        "serviceAccount": _service_account(),
    }


_DURATION = _t("string", "a Prometheus duration, e.g. 5m", pattern=r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def _prometheus_rule() -> Schema:
    def alert(*fields: str) -> Schema:
        extra: dict[str, Schema] = {
            "threshold": _t("number", minimum=0),
            "quantile": _t("number", exclusiveMinimum=0, exclusiveMaximum=1),
            "window": _DURATION,
            "lookback": _DURATION,
        }
        props = {"enabled": _t("boolean"), "for": _DURATION, "severity": _t("string", minLength=1)}
        return _obj({**props, **{f: extra[f] for f in fields}}, required=[*props, *fields])

    return _obj(
        {
            "enabled": _t("boolean"),
            "labels": _STRING_MAP,
            "interval": {"anyOf": [{"const": ""}, _DURATION]},
            "selector": _t("string", 'PromQL label matchers; empty: namespace="<release namespace>"'),
            "alerts": _obj(
                {
                    "queueDepth": alert("threshold"),
                    "failureRate": alert("threshold", "window"),
                    "processingTime": alert("threshold", "quantile", "window"),
                    "deadLetters": alert(),
                    "backlogWithoutWorkers": alert("lookback"),
                    "oldestWaiting": alert("threshold"),
                    "exporterRedisDown": alert(),
                }
            ),
        }
    )


# The schema -----------------------------------------------------------------------------------


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def queue_spec_defs() -> dict[str, Schema]:
    """``$defs`` for one ``queues:`` entry: QueueSpec without ``name``, plus ``worker`` and its parts."""
    generated = _strip_titles(QueueSpec.model_json_schema(ref_template="#/$defs/{model}"))
    defs: dict[str, Schema] = dict(generated.pop("$defs", {}))
    queue: Schema = generated
    queue["properties"].pop("name")
    queue["required"] = [r for r in queue.get("required", []) if r != "name"]
    if not queue["required"]:
        queue.pop("required")
    queue["properties"]["worker"] = _obj(
        {**_worker_overrides(), **_bullmq_worker()},
        "chart only: this queue's overrides of the chart-wide `worker:` values",
    )
    queue["description"] = "One queue (arqscale.core.spec.QueueSpec); its name is the map key."
    # pydantic writes the schedule-name rule as patternProperties, which lets any other name through unchecked;
    # propertyNames refuses a bad name at install time, as the workers would at start-up.
    schedules = queue["properties"]["schedules"]
    [(name_pattern, entry)] = schedules.pop("patternProperties").items()
    schedules["propertyNames"] = {"pattern": name_pattern}
    schedules["additionalProperties"] = entry
    # QueueSpec's own rule, in schema form: an arq queue runs tasks, so it must list some.
    queue["if"] = {"properties": {"backend": {"const": "bullmq"}}, "required": ["backend"]}
    queue["else"] = {"required": ["functions"], "properties": {"functions": {"minItems": 1}}}
    defs["QueueSpec"] = queue
    return defs


def build() -> Schema:
    """The chart's whole ``values.schema.json`` as a dict."""
    worker = _obj(
        {
            **_worker_overrides(),
            "image": _image(required=True),
            "port": {**_PORT, "description": "ARQSCALE_WORKER_PORT: /livez, /readyz, /metrics"},
            "podDeletionCost": _obj(
                {
                    "enabled": _t("boolean", "grants `patch` on pods; confined by a ValidatingAdmissionPolicy"),
                    "allowWithoutAdmissionPolicy": _t(
                        "boolean", "render even where the cluster has no admissionregistration.k8s.io/v1 policies"
                    ),
                }
            ),
            "serviceAccount": _service_account(),
        },
        "chart-wide worker defaults; a queue's `worker:` map overrides them",
    )
    exporter = _obj(
        {
            **_process("ARQSCALE_EXPORTER_PORT: /metrics, /livez, /readyz, /keda/v1/queues/*"),
            "refreshSeconds": _t("number", exclusiveMinimum=0),
            "podDisruptionBudget": _obj(
                {"enabled": _t("boolean"), "maxUnavailable": {"type": ["integer", "string"], "minimum": 0}}
            ),
            "topologySpreadConstraints": {
                "type": ["array", "null"],
                "items": {"type": "object"},
                "description": "null: spread over nodes and zones (ScheduleAnyway); []: none",
            },
            "priorityClassName": _t("string"),
        }
    )
    api = _obj(
        {
            "enabled": _t("boolean"),
            **_process("ARQSCALE_API_PORT"),
            "auth": _obj({"existingSecret": _NAME, "existingSecretKey": _t("string", minLength=1)}),
        }
    )
    webhooks = _obj(
        {
            "enabled": _t(["boolean", "null"], "null: on when any queue declares webhooks"),
            **{
                k: v for k, v in _process("ARQSCALE_WEBHOOKS_PORT: /livez, /readyz, /metrics").items() if k != "service"
            },
            "allowNetworks": _t(
                "array",
                "non-public networks webhooks may reach (ARQSCALE_WEBHOOKS_ALLOW_NETWORKS)",
                items={"type": "string", "pattern": r"^[0-9a-fA-F:.]+(/[0-9]{1,3})?$"},
            ),
            "concurrency": _t("integer", minimum=1, maximum=10000),
            "drainSeconds": _t("integer", minimum=0),
            "secrets": _obj(
                {
                    "envFrom": _t("array", "Secrets whose keys become environment variables", items=_SECRET_NAME),
                    "files": _t(
                        "array",
                        "Secrets mounted at /etc/arqscale/webhook-secrets/<name>/",
                        items=_SECRET_NAME,
                    ),
                }
            ),
        }
    )
    metrics_api = _obj(
        {
            "enabled": _t("boolean"),
            "port": {**_PORT, "description": "the Service port the APIService points to (HTTPS)"},
            "containerPort": {**_PORT, "description": "ARQSCALE_METRICS_API_PORT: where the exporter listens"},
            "namespaces": _t(
                "array",
                "namespaces whose HPAs get counts (ARQSCALE_METRICS_API_NAMESPACES); empty: the release's",
                items={"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            ),
            "readinessProbe": _K8S_OBJECT,
            "groupPriorityMinimum": _t("integer", minimum=1, maximum=20000),
            "versionPriority": _t("integer", minimum=1, maximum=1000),
            "apiServiceAnnotations": _STRING_MAP,
            "clientAuth": _obj(
                {
                    "enabled": _t("boolean"),
                    "allowedNames": _t("string"),
                    "refreshSeconds": _t("integer", "seconds between the sidecar's reads of the CA", minimum=5),
                }
            ),
            "tls": _obj(
                {
                    "existingSecret": _NAME,
                    "caBundle": _t("string", "base64 PEM CA of existingSecret's certificate"),
                    "validityDays": _t("integer", minimum=1),
                    "reloadSeconds": _t("integer", "seconds between re-reads of the TLS files; 0: never", minimum=0),
                    "certManager": _obj(
                        {
                            "enabled": _t("boolean"),
                            "issuerRef": _t("object", "empty: a self-signed CA made by the chart"),
                            "duration": _t("string"),
                            "renewBefore": _t("string"),
                        }
                    ),
                }
            ),
        }
    )
    redis = _obj(
        {
            "enabled": _t("boolean"),
            "image": _image(required=True),
            "auth": _obj({"existingSecret": _NAME, "existingSecretPasswordKey": _t("string", minLength=1)}),
            "appendfsync": _t("string", enum=["always", "everysec", "no"]),
            "maxmemory": _t("string", pattern=r"^([0-9]+([kKmMgG][bB]?)?)?$"),
            "persistence": _obj(
                {
                    "enabled": _t("boolean"),
                    "size": _t("string", pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$"),
                    "storageClass": _t("string"),
                    "accessModes": _t("array", items={"type": "string"}, minItems=1),
                }
            ),
            "resources": _resources(),
            "podSecurityContext": _K8S_OBJECT,
            "securityContext": _K8S_OBJECT,
            "podAnnotations": _STRING_MAP,
            "nodeSelector": _STRING_MAP,
            "tolerations": _K8S_LIST,
            "affinity": _K8S_OBJECT,
        }
    )
    external_redis = _obj(
        {
            "url": _t("string", "redis:// or rediss:// URL", pattern=r"^(rediss?://.*)?$"),
            "host": _t("string"),
            "port": _PORT,
            "username": _t("string"),
            "db": _t("integer", minimum=0),
            "password": _t("string"),
            "existingSecret": _NAME,
            "existingSecretPasswordKey": _t("string"),
            "existingSecretUrlKey": _t("string"),
            "tls": _obj(
                {
                    "enabled": _t("boolean"),
                    "caSecret": _NAME,
                    "caKey": _t("string", minLength=1),
                    "clientCertSecret": _NAME,
                }
            ),
            "sentinel": _obj(
                {
                    "addresses": {
                        "type": "array",
                        "description": "Redis Sentinels as host:port; set: the primary is found through them",
                        "items": {"type": "string", "pattern": _ADDRESS},
                    },
                    "masterName": _t("string", minLength=1),
                    "username": _t("string"),
                    "password": _t("string"),
                    "existingSecretPasswordKey": _t("string"),
                    "tls": _t("boolean"),
                }
            ),
            "cluster": _obj(
                {
                    "nodes": {
                        "type": "array",
                        "description": "Redis Cluster nodes as host:port; set: each queue's keys carry its hash tag",
                        "items": {"type": "string", "pattern": _ADDRESS},
                    },
                }
            ),
            "waitReplicas": _t("integer", "durable enqueue: WAIT for this many replicas (0: do not wait)", minimum=0),
            "waitTimeoutMs": _t("integer", minimum=1),
        }
    )
    queues: Schema = {
        "type": "object",
        "description": "queues keyed by their real name, as in a queues file; empty: the demo queues",
        "propertyNames": {"pattern": QUEUE_NAME_RE.pattern},
        "additionalProperties": {"$ref": "#/$defs/QueueSpec"},
    }
    autoscaling = _obj(
        {
            "engine": _t("string", "hpa: an HPA per queue; keda: a KEDA ScaledObject per queue", enum=["hpa", "keda"]),
            "behavior": _K8S_OBJECT,
            "keda": _obj({"pollingInterval": _t("integer", minimum=1), "cooldownPeriod": _t("integer", minimum=0)}),
        }
    )
    properties: dict[str, Schema] = {
        "global": _t("object"),
        "nameOverride": _t("string"),
        "fullnameOverride": _t("string"),
        "commonLabels": _STRING_MAP,
        "imagePullSecrets": _K8S_LIST,
        "queues": queues,
        "config": _obj(
            {
                "logLevel": _t("string", enum=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
                "logFormat": _t("string", enum=["json", "text"]),
            }
        ),
        "image": _image(required=True),
        "worker": worker,
        "autoscaling": autoscaling,
        "exporter": exporter,
        "metricsApi": metrics_api,
        "api": api,
        "webhooks": webhooks,
        "redis": redis,
        "externalRedis": external_redis,
        "networkPolicy": _obj({"enabled": _t("boolean")}),
        "serviceMonitor": _obj(
            {
                "enabled": _t("boolean"),
                "interval": _t("string", pattern=r"^[0-9]+(ms|s|m|h)$"),
                "scrapeTimeout": _t("string", pattern=r"^[0-9]+(ms|s|m|h)$"),
                "labels": _STRING_MAP,
                "workers": _t("boolean"),
            }
        ),
        "prometheusRule": _prometheus_rule(),
        "grafanaDashboard": _obj(
            {
                "enabled": _t("boolean"),
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
                "namespace": {**_NAME, "description": "where the Grafana sidecar looks; empty: the release's"},
            }
        ),
        "tracing": _obj(
            {
                "enabled": _t("boolean"),
                "endpoint": {
                    "type": "string",
                    "description": "OTLP/HTTP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT); required when enabled",
                    "pattern": "^(https?://\\S+)?$",
                },
                "sampler": {
                    "enum": [
                        "always_on",
                        "always_off",
                        "traceidratio",
                        "parentbased_always_on",
                        "parentbased_always_off",
                        "parentbased_traceidratio",
                    ]
                },
                "samplerArg": {"type": "string", "pattern": "^([01](\\.[0-9]+)?)?$"},
                "resourceAttributes": _STRING_MAP,
            }
        ),
        "tests": _obj({"enabled": _t("boolean")}),
    }
    return {
        "$schema": SCHEMA_DRAFT,
        "title": "arqscale Helm chart values",
        "description": "Generated by `arqscale schema` from arqscale.core.spec.QueueSpec; do not edit by hand.",
        **_obj(properties, required=["queues"]),
        "$defs": queue_spec_defs(),
    }


def render() -> str:
    """``values.schema.json`` as text (stable key order, trailing newline)."""
    return json.dumps(build(), indent=2) + "\n"
