"""`arqscale autoscale`'s refusals: wrong queue, an HPA it cannot run, a bad sync period (exit 2, one line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def autoscale(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arqscale", "autoscale", *args], env=env, input=stdin, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_refusals(redis_env: dict[str, str], tmp_path: Path) -> None:
    qfile = tmp_path / "queues.yaml"
    qfile.write_text(yaml.safe_dump({"queues": {"q": {"functions": ["worker_tasks.noop"]}}}))
    env = redis_env | {"ARQSCALE_QUEUES_FILE": str(qfile)}
    out = autoscale(env, "--queue", "nope")
    assert out.returncode == 2 and "'nope' is not an arq queue" in out.stderr
    out = autoscale(env, "--queue", "q", "--sync-period", "0")
    assert out.returncode == 2 and "--sync-period" in out.stderr
    cpu_hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "w"},
        "spec": {"maxReplicas": 3, "metrics": [{"type": "Resource", "resource": {"name": "cpu"}}]},
    }
    out = autoscale(env, "--queue", "q", "--hpa", "-", stdin=yaml.safe_dump(cpu_hpa))
    assert out.returncode == 2 and "only External metrics" in out.stderr
    out = autoscale(env, "--queue", "q", "--hpa", "-", stdin="kind: ConfigMap\n")
    assert out.returncode == 2 and "no HorizontalPodAutoscaler selects queue=q" in out.stderr
