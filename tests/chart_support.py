"""Helpers for the chart and manifest tests: real helm 3, helm 4 and kubectl, fetched when missing."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "arqscale"
CI_VALUES = CHART / "ci"
TOOLS = Path(os.environ.get("ARQSCALE_TOOLS_DIR", ROOT / ".tools" / "bin"))
HELMS = ("helm3", "helm4")
KUBE_VERSIONS = ("1.29.0", "1.37.0")
# Kinds kubernetes-validate has no schema for: checked field by field in the tests instead.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "ScaledObject", "Certificate", "Issuer"}

# values file name -> path (None: the chart's defaults)
VALUES: dict[str, Path | None] = {"defaults": None} | {
    p.name.removesuffix("-values.yaml"): p for p in sorted(CI_VALUES.glob("*-values.yaml"))
}

RELEASE = "jobs"
NAMESPACE = "work"

Doc = dict[str, Any]


def ensure_tools() -> Path:
    """Run scripts/fetch-tools when a binary is missing; returns the bin directory."""
    needed = [*HELMS, "kubectl"]
    if not all((TOOLS / name).is_file() for name in needed):
        subprocess.run([str(ROOT / "scripts" / "fetch-tools")], check=True, capture_output=True, timeout=600)
    missing = [name for name in needed if not (TOOLS / name).is_file()]
    assert not missing, f"scripts/fetch-tools did not install {missing}"
    return TOOLS


def run_tool(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOLS / tool), *args], capture_output=True, text=True, timeout=timeout, check=False)


def helm_template(
    helm: str, *args: str, release: str = RELEASE, namespace: str = NAMESPACE
) -> subprocess.CompletedProcess[str]:
    return run_tool(helm, "template", release, str(CHART), "--namespace", namespace, *args)


def parse_docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


@functools.cache
def render(helm: str, values: str) -> tuple[Doc, ...]:
    """The chart rendered once per (helm, values file) for the whole session."""
    path = VALUES[values]
    result = helm_template(helm, *(["--values", str(path)] if path else []))
    assert result.returncode == 0, result.stderr
    return tuple(parse_docs(result.stdout))


@functools.cache
def lint(helm: str, values: str) -> subprocess.CompletedProcess[str]:
    path = VALUES[values]
    return run_tool(helm, "lint", "--strict", str(CHART), *(["-f", str(path)] if path else []))


@functools.cache
def template_with(helm: str, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return helm_template(helm, *args)


def prefetch(extra_templates: Iterable[tuple[str, tuple[str, ...]]] = ()) -> None:
    """Run every render, lint and given template once, in parallel (helm is single-threaded and slow to start)."""
    jobs = [
        *((render, (h, v)) for h in HELMS for v in VALUES),
        *((lint, (h, v)) for h in HELMS for v in VALUES),
        *((template_with, args) for args in extra_templates),
    ]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        for future in [pool.submit(fn, *args) for fn, args in jobs]:
            future.exception()  # failures resurface, with their message, in the test that asks


@functools.cache
def _validate_once(doc_json: str, version: str) -> str | None:
    doc = json.loads(doc_json)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return "no-schema"
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        return f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}"
    return None


def validation_errors(docs: Iterable[Doc], version: str) -> list[str]:
    """Strict schema errors of every document; identical documents are validated once per version."""
    errors = []
    for doc in docs:
        problem = _validate_once(json.dumps(doc, sort_keys=True), version)
        if problem == "no-schema":
            if doc["kind"] not in CUSTOM_KINDS:
                errors.append(f"{doc['kind']}: no schema in kubernetes-validate {version}")
        elif problem:
            errors.append(problem)
    return errors


def by_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def component(docs: Iterable[Doc], kind: str, name: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["labels"].get("app.kubernetes.io/component") == name]


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def chart_values(values: str) -> Doc:
    """The chart's values.yaml overlaid with a ci values file (maps merge, lists replace, as helm does)."""
    base: Doc = yaml.safe_load((CHART / "values.yaml").read_text())
    path = VALUES[values]
    return _merge(base, yaml.safe_load(path.read_text()) if path else {})


def effective_queues(values: str) -> dict[str, Doc]:
    queues: dict[str, Doc] = (
        chart_values(values)["queues"] or yaml.safe_load((CHART / "files" / "demo-queues.yaml").read_text())["queues"]
    )
    return queues


def _merge(base: Doc, over: Doc) -> Doc:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
