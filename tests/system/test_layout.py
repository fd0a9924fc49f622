"""The package layout is the architecture: one folder per process around a shared core.

Reads every module's imports (the ``ast``, not a regex) and holds the layering docs/design.md draws:
``core`` imports no process package; ``worker``, ``api``, ``exporter``, ``autoscaler``, ``webhooks``, ``chart``
and ``demo`` import ``core`` and themselves only; ``cli`` may import any of them (it starts them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "arqscale"
ROOMS = {"core", "worker", "api", "exporter", "webhooks", "cli", "demo", "chart", "autoscaler"}
MAY_IMPORT = {
    "core": {"core"},
    "worker": {"core", "worker"},
    "api": {"core", "api"},
    "exporter": {"core", "exporter"},
    "webhooks": {"core", "webhooks"},
    "chart": {"core", "chart"},
    "demo": {"core", "demo"},
    "autoscaler": {"core", "autoscaler"},
    "cli": ROOMS,
}
TOP_LEVEL = {"__init__.py", "__main__.py"}


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def arqscale_imports(path: Path) -> set[str]:
    """Every ``arqscale.X`` module a file imports, with ``from arqscale import x`` resolved to ``arqscale.x``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("arqscale."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "arqscale":
                found.update(f"arqscale.{a.name}" for a in node.names)
            elif node.module.startswith("arqscale."):
                found.add(node.module)
    return found


def test_every_module_sits_in_exactly_one_room() -> None:
    stray = [p.relative_to(PKG) for p in modules() if p.parent == PKG and p.name not in TOP_LEVEL]
    assert stray == [], f"modules outside the process/core packages: {stray}"
    rooms = {p.relative_to(PKG).parts[0] for p in modules() if p.parent != PKG}
    assert rooms == ROOMS


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_a_room_imports_only_what_it_may(room: str) -> None:
    wrong = {}
    for path in (PKG / room).rglob("*.py"):
        rooms = {name.split(".")[1] for name in arqscale_imports(path)} & ROOMS
        if rooms - MAY_IMPORT[room]:
            wrong[str(path.relative_to(PKG))] = sorted(rooms - MAY_IMPORT[room])
    assert wrong == {}, f"{room} imports what it may not: {wrong}"


def test_the_package_root_re_exports_only_the_core() -> None:
    imported = arqscale_imports(PKG / "__init__.py")
    assert imported, "arqscale/__init__.py re-exports the public API"
    assert {name.split(".")[1] for name in imported} <= {"core"}


def test_this_test_sees_a_violation() -> None:
    """The checker itself: an upward import written to a temporary file is caught."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write("from arqscale.worker.loop import Worker\nfrom arqscale import api\nimport arqscale.core.keys\n")
    try:
        assert arqscale_imports(Path(f.name)) == {"arqscale.worker.loop", "arqscale.api", "arqscale.core.keys"}
    finally:
        Path(f.name).unlink()


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by their base name (no __init__.py in tests/): two ``test_x.py`` in
    different folders break collection of the whole suite, so folders may not reuse a name."""
    tests = Path(__file__).resolve().parent.parent
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(tests.rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(tests)} and {path.relative_to(tests)}")
        seen.setdefault(path.name, path)
    assert clashes == []
