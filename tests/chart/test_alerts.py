"""The chart's PrometheusRule: rendered by helm 3 and 4, its groups run through `promtool test rules`.

The unit tests live in tests/chart/alerts/alerts-test.yaml (one group per alert, each firing and
staying quiet); this file renders the chart, writes the rule groups beside a copy of them and runs the
real promtool. A changed threshold must reach the rules (and so break the tests written for the default).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_support import (
    CHART,
    HELMS,
    KUBE_VERSIONS,
    NAMESPACE,
    Doc,
    ensure_tools,
    one,
    parse_docs,
    run_tool,
    template_with,
    validation_errors,
)
from exporter_support import promtool

ALERT_TESTS = Path(__file__).with_name("alerts") / "alerts-test.yaml"
ALERTS = {
    "ArqscaleQueueDepthHigh",
    "ArqscaleJobFailureRateHigh",
    "ArqscaleProcessingTimeHigh",
    "ArqscaleDeadLettersNotEmpty",
    "ArqscaleBacklogWithoutWorkers",
    "ArqscaleOldestWaitingJobTooOld",
    "ArqscaleExporterRedisDown",
}


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    ensure_tools()


def rule(helm: str, *sets: str) -> Doc:
    # --set-json: plain --set turns 0.2 into a string, which the schema refuses.
    args = ("--set", "prometheusRule.enabled=true", *(a for s in sets for a in ("--set-json", s)))
    result = template_with(helm, args)
    assert result.returncode == 0, result.stderr
    return one(parse_docs(result.stdout), "PrometheusRule", "jobs-arqscale")


def run_promtool_tests(doc: Doc, where: Path) -> subprocess.CompletedProcess[str]:
    (where / "rules.yaml").write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    shutil.copy(ALERT_TESTS, where / "alerts-test.yaml")
    check = subprocess.run([promtool(), "check", "rules", "rules.yaml"], cwd=where, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.run(
        [promtool(), "test", "rules", "alerts-test.yaml"], cwd=where, capture_output=True, text=True, timeout=120
    )


def alert_names(doc: Doc) -> set[str]:
    return {r["alert"] for g in doc["spec"]["groups"] for r in g["rules"]}


def test_off_by_default() -> None:
    result = template_with("helm4", ())
    assert result.returncode == 0
    assert not [d for d in parse_docs(result.stdout) if d["kind"] == "PrometheusRule"]


@pytest.mark.parametrize("helm", HELMS)
def test_every_alert_passes_its_promtool_tests(helm: str, tmp_path: Path) -> None:
    doc = rule(helm)
    assert alert_names(doc) == ALERTS
    result = run_promtool_tests(doc, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Each alert has a test case where it fires, so no alert passes by never being evaluated.
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert firing == ALERTS


@pytest.mark.parametrize(
    ("sets", "broken"),
    [
        (["prometheusRule.alerts.queueDepth.threshold=2000"], "ArqscaleQueueDepthHigh"),
        (["prometheusRule.alerts.failureRate.threshold=0.2"], "ArqscaleJobFailureRateHigh"),
        (["prometheusRule.alerts.processingTime.threshold=150"], "ArqscaleProcessingTimeHigh"),
        (["prometheusRule.alerts.oldestWaiting.threshold=1200"], "ArqscaleOldestWaitingJobTooOld"),
        (['prometheusRule.alerts.exporterRedisDown.for="10m"'], "ArqscaleExporterRedisDown"),
        (['prometheusRule.selector="namespace=\\"elsewhere\\""'], "ArqscaleDeadLettersNotEmpty"),
    ],
)
def test_values_reach_the_rules(sets: list[str], broken: str, tmp_path: Path) -> None:
    result = run_promtool_tests(rule("helm4", *sets), tmp_path)
    assert result.returncode == 1
    assert f"alertname: {broken}" in result.stdout + result.stderr


def test_alerts_can_be_switched_off_one_by_one() -> None:
    doc = rule("helm3", "prometheusRule.alerts.deadLetters.enabled=false", 'prometheusRule.labels.release="kps"')
    assert alert_names(doc) == ALERTS - {"ArqscaleDeadLettersNotEmpty"}
    assert doc["metadata"]["labels"]["release"] == "kps"


def test_alerts_are_scoped_to_the_release_namespace() -> None:
    exprs = [r["expr"] for g in rule("helm4")["spec"]["groups"] for r in g["rules"]]
    assert all(f'namespace="{NAMESPACE}"' in e for e in exprs)


def test_lint_with_alerts_and_dashboard() -> None:
    for helm in HELMS:
        args = ("--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true")
        result = run_tool(helm, "lint", "--strict", str(CHART), *args)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("helm", HELMS)
def test_dashboard_configmap_for_the_grafana_sidecar(helm: str) -> None:
    result = template_with(
        helm, ("--set", "grafanaDashboard.enabled=true", "--set", "grafanaDashboard.namespace=monitoring")
    )
    assert result.returncode == 0, result.stderr
    docs = parse_docs(result.stdout)
    configmap = one(docs, "ConfigMap", "jobs-arqscale-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    [(key, text)] = configmap["data"].items()
    assert key.endswith(".json")
    assert json.loads(text) == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    for version in KUBE_VERSIONS:
        assert validation_errors([configmap], version) == []
    off = template_with(helm, ())
    assert "jobs-arqscale-dashboard" not in off.stdout
