"""The peer runners of bench/run.py (bench/peers/) without the peers: they parse, import and take their arguments.

The peers themselves (SAQ, Celery, Dramatiq, taskiq, BullMQ for Python) live only in the bench-only virtualenv
(``python bench/run.py --setup-peers``), never in the project's: so each runner imports its library inside
functions, and this test holds that, along with the harness's table of runners.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import run  # noqa: E402  (bench/run.py, on the path just above)
from peers import common  # noqa: E402

RUNNERS = sorted(run.PEER_RUNNERS.values())
PEER_LIBRARIES = {"saq", "celery", "dramatiq", "taskiq", "taskiq_redis", "bullmq", "uvloop", "redis"}


def test_every_peer_family_has_a_runner_and_a_system() -> None:
    families = {s.family for s in run.SYSTEMS}
    assert set(run.PEER_RUNNERS) <= families
    for module in RUNNERS:
        assert (BENCH / Path(*module.split("."))).with_suffix(".py").exists(), module
    io_families = {s.family for s in run.SYSTEMS if s.key in run.IO_SYSTEMS}
    assert io_families == set(run.PEER_RUNNERS) | {"arq", "arqscale", "bullmq"}


@pytest.mark.parametrize("module", RUNNERS)
def test_a_runner_imports_its_peer_only_inside_functions(module: str) -> None:
    tree = ast.parse((BENCH / Path(*module.split("."))).with_suffix(".py").read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert not top & PEER_LIBRARIES, f"{module} imports {top & PEER_LIBRARIES} at the top"
    loaded = importlib.import_module(module)  # so it imports here, where no peer is installed
    assert callable(loaded.main)


@pytest.mark.parametrize("module", RUNNERS)
def test_a_runner_takes_the_harness_arguments(module: str) -> None:
    bench = run.Bench.__new__(run.Bench)  # only its command builders: no Redis
    bench.peers_python, bench.url = "python", "redis://127.0.0.1:1/0"
    family = next(f for f, m in run.PEER_RUNNERS.items() if m == module)
    cmd = bench.client_cmd(family, "fill", "--n", "20", "--task", "sleep")
    assert cmd[:3] == ["python", "-m", module]
    args = common.parse_args(cmd[3:])
    assert (args.action, args.url, args.n, args.task) == ("fill", bench.url, 20, "sleep")
    worker = common.parse_args(["worker", bench.url, "--concurrency", "500", "--expect", "10000"])
    assert (worker.concurrency, worker.expect) == (500, 10000)


def test_fill_batches_add_up() -> None:
    assert common.batches(1200, 500) == [500, 500, 200]
    assert common.batches(0) == []


def test_the_peer_requirements_are_pinned() -> None:
    text = run.PEERS_REQUIREMENTS.read_text().splitlines()
    lines = [line.split("#")[0].strip() for line in text if line.split("#")[0].strip()]
    assert lines and all("==" in line for line in lines), lines
