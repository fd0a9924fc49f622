"""The local autoscaler runs the HPA the chart renders: parsed from helm's output, or built from the queue's
hints with the chart's default behavior, it is the same HPA (names, targets, min/max, behavior)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from arqscale.autoscaler import hpa as hpa_mod
from arqscale.chart.schema import HPA_METRICS
from arqscale.core.spec import parse_queues
from chart_support import HELMS, by_kind, ensure_tools, render

VALUES_FILE = Path(__file__).resolve().parents[2] / "helm" / "arqscale" / "values.yaml"


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    ensure_tools()


def test_the_autoscaler_knows_the_charts_metric_names_and_behavior() -> None:
    assert hpa_mod.HPA_METRICS == HPA_METRICS
    assert yaml.safe_load(VALUES_FILE.read_text())["autoscaling"]["behavior"] == hpa_mod.CHART_BEHAVIOR


@pytest.mark.parametrize("helm", HELMS)
def test_rendered_hpas_equal_the_ones_built_from_the_queues(helm: str) -> None:
    docs = render(helm, "all-on")
    configmap = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-queues"))
    specs = parse_queues(yaml.safe_load(configmap["data"]["queues.yaml"]))
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert any(
        m["external"]["metric"]["name"] == HPA_METRICS["wait_target"] for h in hpas for m in h["spec"]["metrics"]
    )
    for doc in hpas:
        queue = doc["metadata"]["labels"]["arqscale.io/queue"]
        rendered = hpa_mod.from_manifest(doc)
        assert hpa_mod.for_queue(docs, queue) == rendered
        built = hpa_mod.from_spec(specs[queue])
        assert dataclasses.replace(built, name=rendered.name, labels=rendered.labels) == rendered, queue
