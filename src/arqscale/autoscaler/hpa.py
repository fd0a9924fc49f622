"""A HorizontalPodAutoscaler (``autoscaling/v2``) as data: what the local autoscaler needs from it.

Two ways in: ``from_manifest`` reads the chart's rendered HPA (``helm template ... | arqscale autoscale
--hpa -``), ``from_spec`` builds the same fields from a queue's ``autoscaling:`` hints and the chart's
default ``behavior`` (a test keeps both equal). Missing ``behavior`` fields get the API server's
defaults (kubernetes ``pkg/apis/autoscaling/v2/defaults.go``, ``SetDefaults_HorizontalPodAutoscalerBehavior``):
scale up without a window, by 100 % or 4 pods per 15 s, whichever is more; scale down after a 300 s
window by up to 100 % per 15 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from arqscale.core.spec import QueueSpec

# Metric hint (queues.X.autoscaling.metrics) -> the exporter's External Metrics API name. The chart's
# mapping (arqscale.chart.schema.HPA_METRICS); a test keeps the two equal.
HPA_METRICS: dict[str, str] = {
    "waiting": "bullmq_queue_waiting",
    "backlog": "arqscale_queue_backlog",
    "oldest_waiting": "arqscale_queue_oldest_waiting_seconds",
    "wait_target": "arqscale_queue_wait_target_workers",
}

# The chart's autoscaling.behavior default (helm/arqscale/values.yaml; a test keeps them equal).
CHART_BEHAVIOR: dict[str, Any] = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Min",
        "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
    },
}

# The controller's --horizontal-pod-autoscaler-tolerance default.
DEFAULT_TOLERANCE = 0.1

SelectPolicy = Literal["Max", "Min", "Disabled"]


class HpaError(ValueError):
    """An HPA this autoscaler cannot run; the message says which field."""


@dataclass(frozen=True, slots=True)
class Policy:
    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


@dataclass(frozen=True, slots=True)
class ScalingRules:
    stabilization_window_seconds: int
    select_policy: SelectPolicy
    policies: tuple[Policy, ...]
    # HPAConfigurableTolerance (alpha in 1.33): per-direction tolerance; None means the controller's flag.
    tolerance: float | None = None

    @property
    def longest_period(self) -> int:
        return max((p.period_seconds for p in self.policies), default=0)


@dataclass(frozen=True, slots=True)
class Behavior:
    scale_up: ScalingRules
    scale_down: ScalingRules


@dataclass(frozen=True, slots=True)
class ExternalMetric:
    """One ``type: External`` entry: the metric, its selector, and a ``Value`` or ``AverageValue`` target."""

    name: str
    match_labels: Mapping[str, str]
    target_type: Literal["Value", "AverageValue"]
    target_milli: int  # the controller works in milli-units (Quantity.MilliValue())

    def label_selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.match_labels.items()))


@dataclass(frozen=True, slots=True)
class Hpa:
    name: str
    min_replicas: int
    max_replicas: int
    metrics: tuple[ExternalMetric, ...]
    behavior: Behavior
    tolerance: float = DEFAULT_TOLERANCE
    labels: Mapping[str, str] = field(default_factory=dict)


def parse_quantity_milli(value: object) -> int:
    """A Kubernetes quantity (``"20"``, ``"1500m"``, ``2.5``, ``"1k"``) in milli-units, rounded up as
    ``Quantity.MilliValue()`` does."""
    text = str(value).strip()
    suffixes = {
        "n": Decimal("1e-9"),
        "u": Decimal("1e-6"),
        "m": Decimal("1e-3"),
        "k": Decimal(1000),
        "M": Decimal(10**6),
        "G": Decimal(10**9),
        "Ki": Decimal(1024),
        "Mi": Decimal(1024**2),
    }
    scale = Decimal(1)
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)].strip():
            scale, text = suffixes[suffix], text[: -len(suffix)]
            break
    try:
        milli = Decimal(text) * scale * 1000
    except ArithmeticError:
        raise HpaError(f"not a quantity: {value!r}") from None
    return int(milli.to_integral_value(rounding="ROUND_CEILING"))


def _rules(raw: Mapping[str, Any] | None, direction: str) -> ScalingRules:
    raw = raw or {}
    if direction == "scaleUp":
        window, policies = (
            0,
            [{"type": "Percent", "value": 100, "periodSeconds": 15}, {"type": "Pods", "value": 4, "periodSeconds": 15}],
        )
    else:
        window, policies = 300, [{"type": "Percent", "value": 100, "periodSeconds": 15}]
    chosen: list[dict[str, Any]] = raw.get("policies") or policies
    parsed = []
    for p in chosen:
        if (
            p.get("type") not in ("Pods", "Percent")
            or int(p.get("value", 0)) <= 0
            or int(p.get("periodSeconds", 0)) <= 0
        ):
            raise HpaError(
                f"behavior.{direction}.policies: {p!r} needs type Pods or Percent, value > 0, periodSeconds > 0"
            )
        parsed.append(Policy(p["type"], int(p["value"]), int(p["periodSeconds"])))
    select = raw.get("selectPolicy", "Max")
    if select not in ("Max", "Min", "Disabled"):
        raise HpaError(f"behavior.{direction}.selectPolicy: {select!r} is not Max, Min or Disabled")
    tolerance = raw.get("tolerance")
    return ScalingRules(
        stabilization_window_seconds=int(raw.get("stabilizationWindowSeconds", window)),
        select_policy=select,
        policies=tuple(parsed),
        tolerance=None if tolerance is None else parse_quantity_milli(tolerance) / 1000,
    )


def parse_behavior(raw: Mapping[str, Any] | None) -> Behavior:
    raw = raw or {}
    return Behavior(_rules(raw.get("scaleUp"), "scaleUp"), _rules(raw.get("scaleDown"), "scaleDown"))


def from_manifest(doc: Mapping[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> Hpa:
    """An ``autoscaling/v2`` HorizontalPodAutoscaler with External metrics (what the chart renders)."""
    if doc.get("kind") != "HorizontalPodAutoscaler" or not str(doc.get("apiVersion", "")).startswith("autoscaling/v2"):
        raise HpaError(f"not an autoscaling/v2 HorizontalPodAutoscaler: {doc.get('apiVersion')}/{doc.get('kind')}")
    spec = doc.get("spec") or {}
    metrics = []
    for i, m in enumerate(spec.get("metrics") or []):
        if m.get("type") != "External":
            raise HpaError(f"spec.metrics[{i}]: only External metrics run locally (got {m.get('type')})")
        ext = m["external"]
        target = ext["target"]
        kind = target.get("type")
        if kind == "AverageValue":
            milli = parse_quantity_milli(target["averageValue"])
        elif kind == "Value":
            milli = parse_quantity_milli(target["value"])
        else:
            raise HpaError(
                f"spec.metrics[{i}].external.target.type: {kind!r} (External metrics take Value or AverageValue)"
            )
        if milli <= 0:
            raise HpaError(f"spec.metrics[{i}]: the target must be above 0")
        selector = (ext["metric"].get("selector") or {}).get("matchLabels") or {}
        metrics.append(ExternalMetric(ext["metric"]["name"], dict(selector), kind, milli))
    if not metrics:
        raise HpaError("spec.metrics: at least one External metric")
    min_replicas = int(spec.get("minReplicas", 1))
    max_replicas = int(spec["maxReplicas"])
    if min_replicas < 1 or max_replicas < min_replicas:
        raise HpaError(f"replicas: need 1 <= minReplicas ({min_replicas}) <= maxReplicas ({max_replicas})")
    return Hpa(
        name=str((doc.get("metadata") or {}).get("name", "hpa")),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        metrics=tuple(metrics),
        behavior=parse_behavior(spec.get("behavior")),
        tolerance=tolerance,
        labels=dict((doc.get("metadata") or {}).get("labels") or {}),
    )


def for_queue(docs: Iterable[Mapping[str, Any] | None], queue: str) -> Hpa:
    """The HPA among ``docs`` (e.g. a whole ``helm template`` output) whose metrics select ``queue``."""
    seen = []
    for doc in docs:
        if not doc or doc.get("kind") != "HorizontalPodAutoscaler":
            continue
        hpa = from_manifest(doc)
        seen.append(hpa.name)
        if all(m.match_labels.get("queue") == queue for m in hpa.metrics):
            return hpa
    raise HpaError(f"no HorizontalPodAutoscaler selects queue={queue} (found: {', '.join(seen) or 'none'})")


def target_of(spec: QueueSpec, hint: str) -> tuple[Literal["AverageValue"], int]:
    """The chart's target for one metric hint, in milli-units (workers/templates/workers.yaml)."""
    a = spec.autoscaling
    if hint == "oldest_waiting":
        value = a.target_oldest_waiting_seconds
    elif hint == "wait_target":
        value = 1.0  # the metric is a number of workers: one per replica
    else:
        value = a.target_per_replica
    return "AverageValue", parse_quantity_milli(repr(float(value)))


def from_spec(spec: QueueSpec, behavior: Mapping[str, Any] | None = None) -> Hpa:
    """The HPA the chart renders for this queue, built from its ``autoscaling:`` hints."""
    a = spec.autoscaling
    metrics = []
    for hint in a.metrics:
        kind, milli = target_of(spec, hint)
        metrics.append(ExternalMetric(HPA_METRICS[hint], {"queue": spec.name}, kind, milli))
    return Hpa(
        name=f"worker-{spec.name}",
        min_replicas=max(a.min_replicas, 1),
        max_replicas=a.max_replicas,
        metrics=tuple(metrics),
        behavior=parse_behavior(CHART_BEHAVIOR if behavior is None else behavior),
    )
