"""The README's two commands in either order: `make demo` and `make test` share .venv but not its extras,
and `make test` leaves the clone and the machine as it found them.

What runs here is the real Makefile (`make -n`, in a copy with a stand-in .venv) and the real npm
against the committed lock file; the whole sequence on a fresh clone is what `.ci/run` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV_INSTALL = "pip install -q -e '.[dev,local]'"
DEMO_INSTALL = "pip install -q -e '.[local]'"


def plan(workdir: Path, target: str) -> str:
    """The commands `make TARGET` would run in ``workdir`` (nothing is run)."""
    out = subprocess.run(["make", "-n", target], cwd=workdir, capture_output=True, text=True, check=True)
    return out.stdout


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def fake_venv(clone: Path) -> None:
    """A .venv with a python, as `python3 -m venv` leaves it, newer than pyproject.toml."""
    bin_dir = clone / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")


def mark_installed(clone: Path, stamp: str) -> None:
    path = clone / ".venv" / stamp
    path.touch()
    later = (clone / "pyproject.toml").stat().st_mtime + 10
    os.utime(path, (later, later))


def stamps(clone: Path) -> set[str]:
    return {p.name for p in (clone / ".venv").glob(".installed-*")}


def test_make_test_after_make_demo_installs_the_dev_extras(clone: Path) -> None:
    fake_venv(clone)
    # What `make demo` leaves: the runtime and [local] extras, stamped as such.
    demo = plan(clone, "demo")
    assert DEMO_INSTALL in demo and DEV_INSTALL not in demo
    mark_installed(clone, ".installed-local")
    assert DEMO_INSTALL not in plan(clone, "demo")  # a second `make demo` installs nothing again
    # `make test` must not take that venv as ready (the red first run of issue 9).
    test = plan(clone, "test")
    assert DEV_INSTALL in test and test.index(DEV_INSTALL) < test.index("scripts/install-test-deps")


def test_make_demo_after_make_test_installs_nothing_more(clone: Path) -> None:
    fake_venv(clone)
    assert DEV_INSTALL in plan(clone, "venv")
    mark_installed(clone, ".installed-dev-local")
    mark_installed(clone, ".installed-local")  # the dev install touches both: [dev,local] includes [local]
    assert "pip install" not in plan(clone, "demo") and "pip install" not in plan(clone, "test")
    # The dev rule does stamp both (checked on the real rule, not on this stand-in).
    rule = re.search(r"^\$\(STAMP_DEV\):.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.M | re.S)
    assert rule is not None and "touch $@ $(STAMP_DEMO)" in rule.group(0)


def test_a_changed_pyproject_reinstalls(clone: Path) -> None:
    fake_venv(clone)
    mark_installed(clone, ".installed-dev-local")
    mark_installed(clone, ".installed-local")
    later = (clone / ".venv" / ".installed-local").stat().st_mtime + 10
    os.utime(clone / "pyproject.toml", (later, later))
    assert DEV_INSTALL in plan(clone, "test") and DEMO_INSTALL in plan(clone, "demo")


def test_ci_runs_the_readme_test_command() -> None:
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert "make test" in (ROOT / "README.md").read_text()


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_ci_takes_the_lock_file_as_it_is(tmp_path: Path) -> None:
    # `npm install` rewrote bench/package-lock.json on every fresh clone; `npm ci` never writes it, and
    # refuses a lock file that lacks a platform's optional packages (npm 11). --offline --dry-run: the
    # check of the lock against package.json, no download.
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(ROOT / "bench" / name, tmp_path / name)
    before = (tmp_path / "package-lock.json").read_bytes()
    out = subprocess.run(
        ["npm", "ci", "--dry-run", "--offline", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "package-lock.json").read_bytes() == before


def test_install_script_uses_npm_ci_and_stops_no_process() -> None:
    script = (ROOT / "scripts" / "install-test-deps").read_text()
    commands = [line.split("#", 1)[0] for line in script.splitlines()]
    code = "\n".join(commands)
    assert re.search(r"\bnpm ci\b", code) and not re.search(r"\bnpm (install|i)\b", code)
    # A user's Prometheus or Redis is not ours to stop: no kill by name, pid or service.
    for pattern in (r"\bpkill\b", r"\bkillall\b", r"\bkill\b", r"systemctl\s+stop", r"service\s+\S+\s+stop"):
        assert not re.search(pattern, code), pattern
