"""Schedules and per-key limits in the chart's ``queues:`` value, rendered by real helm 3 and helm 4.

The queues ConfigMap must carry a queue's ``schedules:`` and ``group:`` as written (the workers read them
from it), the render must be valid Kubernetes (``kubernetes-validate --strict``), and values.schema.json must
refuse malformed ones at ``helm template``/``install`` time, naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from arqscale.core.spec import parse_queues
from chart_support import CHART, HELMS, KUBE_VERSIONS, Doc, ensure_tools, helm_template, one, parse_docs, run_tool
from chart_support import validation_errors as k8s_errors

SCHEDULES: dict[str, Any] = {
    "nightly-report": {
        "cron": "30 2 * * MON-FRI",
        "timezone": "Europe/Berlin",
        "function": "app.tasks.report",
        "kwargs": {"kind": "daily", "recipients": ["ops@example.com"]},
        "missed": "run_once",
    },
    "sweep": {"every": 300, "function": "app.tasks.sweep", "jitter": 10},
}
GROUP: dict[str, Any] = {"key": "user_id", "concurrency": 2, "rate_limit": {"max_jobs": 10, "interval": 60}}


def queues_value(schedules: dict[str, Any] | None = None, group: dict[str, Any] | None = None) -> Doc:
    return {
        "queues": {
            "reports": {
                "functions": ["app.tasks.report", "app.tasks.sweep"],
                "schedules": SCHEDULES if schedules is None else schedules,
                "group": GROUP if group is None else group,
            },
            "email": {"functions": ["app.tasks.send_email"]},
        }
    }


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    ensure_tools()


def template(helm: str, tmp_path: Path, values: Doc) -> Any:
    path = tmp_path / f"{helm}-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return helm_template(helm, "--values", str(path))


@pytest.mark.parametrize("helm", HELMS)
def test_schedules_and_group_reach_the_queues_configmap_and_render_valid_kubernetes(helm: str, tmp_path: Path) -> None:
    values = queues_value()
    result = template(helm, tmp_path, values)
    assert result.returncode == 0, result.stderr
    docs = parse_docs(result.stdout)
    data = yaml.safe_load(one(docs, "ConfigMap", "jobs-arqscale-queues")["data"]["queues.yaml"])
    assert data["queues"]["reports"]["schedules"] == SCHEDULES
    assert data["queues"]["reports"]["group"] == GROUP
    assert "schedules" not in data["queues"]["email"] and "group" not in data["queues"]["email"]
    specs = parse_queues(data)  # what the workers do with it at start-up
    assert specs["reports"].schedules["nightly-report"].timezone == "Europe/Berlin"
    assert specs["reports"].group is not None and specs["reports"].group.concurrency == 2
    for version in KUBE_VERSIONS:
        assert k8s_errors(docs, version) == []
    lint = run_tool(helm, "lint", "--strict", str(CHART), "-f", str(tmp_path / f"{helm}-values.yaml"))
    assert lint.returncode == 0, lint.stdout + lint.stderr


BAD = [
    # (schedules, group, the field the error must name)
    ({"r": {"cron": "every day at noon", "function": "app.tasks.report"}}, None, "cron"),
    ({"r": {"cron": "0 12 * *", "function": "app.tasks.report"}}, None, "cron"),
    ({"r": {"cron": "0 12 * * *", "timezone": "Europe Berlin", "function": "app.tasks.report"}}, None, "timezone"),
    ({"r": {"cron": "0 12 * * *", "timezone": "+02:00", "function": "app.tasks.report"}}, None, "timezone"),
    ({"r": {"every": 0, "function": "app.tasks.report"}}, None, "every"),
    ({"r": {"every": 60, "function": "app.tasks.report", "missed": "catch_up"}}, None, "missed"),
    ({"r": {"every": 60, "function": "app.tasks.report", "cronn": "* * * * *"}}, None, "cronn"),
    ({"bad name!": {"every": 60, "function": "app.tasks.report"}}, None, "bad name!"),
    (None, {"key": "user-id"}, "key"),
    (None, {"concurrency": 0}, "concurrency"),
    (None, {"rate_limit": {"max_jobs": 0, "interval": 1}}, "max_jobs"),
]


@pytest.mark.parametrize("helm", HELMS)
@pytest.mark.parametrize(("schedules", "group", "field"), BAD, ids=[f"{f}-{i}" for i, (_, _, f) in enumerate(BAD)])
def test_the_schema_refuses_malformed_schedules_and_groups_naming_the_field(
    helm: str, schedules: dict[str, Any] | None, group: dict[str, Any] | None, field: str, tmp_path: Path
) -> None:
    result = template(helm, tmp_path, queues_value(schedules, group))
    assert result.returncode != 0, f"rendered despite {schedules or group}"
    assert field in result.stderr, result.stderr
    # The workers would refuse it too: the schema only says so earlier, at install time.
    body = queues_value(schedules, group)
    with pytest.raises(ValueError):
        parse_queues(body)


@pytest.mark.parametrize("helm", HELMS)
def test_the_schema_shapes_refuse_only_what_the_worker_refuses(helm: str, tmp_path: Path) -> None:
    # The schema's cron and time-zone patterns are shapes; the real checks (cronsim, the tz database) are the
    # worker's. Values the worker accepts must never be refused by helm.
    crons = ("0 0 L * *", "*/5 * * * * *", "0 9 * * MON#2", "0 0 1 JAN-MAR *", "0 0 LW * *", "0 0 * * 5L")
    zones = ("UTC", "America/Argentina/Buenos_Aires", "Etc/GMT+2", "America/Port-au-Prince", "EST5EDT")
    schedules = {
        f"s{i}-{j}": {"cron": cron, "timezone": zone, "function": "app.tasks.report"}
        for i, cron in enumerate(crons)
        for j, zone in enumerate(zones)
    }
    assert len(parse_queues(queues_value(schedules))["reports"].schedules) == len(crons) * len(zones)
    result = template(helm, tmp_path, queues_value(schedules))
    assert result.returncode == 0, result.stderr
