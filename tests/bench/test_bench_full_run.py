"""bench/full_run.py and bench/run.py's report, from made-up results: no benchmark runs here.

The full run puts one block into docs/benchmarks.md from its steps' results: each step reports Markdown and
optional checks (``json`` steps through ``--json FILE``, ``stdout`` steps by printing); these tests hold the
block's shape, the steps' commands, and bench/run.py's own part of the protocol.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import full_run  # noqa: E402
import run  # noqa: E402


def throughput(system: str, rate: float, concurrency: int = 50, redis_us: float = 20.0) -> run.Throughput:
    return run.Throughput(system, concurrency, 5000, rate, 0.3, 40.0, redis_us, 14.5)


def made_up_results() -> run.Results:
    res = run.Results(facts={"date": "2026-12-04 19:00 UTC"}, jobs=5000, io_jobs=60000)
    res.throughput = {
        "arqscale-50": [throughput("arqscale-50", 15000, redis_us=22.0)],
        "bullmq-50": [throughput("bullmq-50", 9000, redis_us=44.0)],
        "saq-50": [throughput("saq-50", 3000)],
    }
    res.io = {
        "arqscale-50": [throughput("arqscale-50", 9300, 500)],
        "bullmq-50": [throughput("bullmq-50", 6000, 500)],
    }
    return res


def test_run_py_reports_peers_io_and_floors_as_a_full_run_step(tmp_path: Path) -> None:
    args = run.parse_args(["--quick", "--only", "throughput", "io"])
    res = made_up_results()
    text = run.report(res, args, "python bench/run.py --quick")
    assert "| SAQ 0.26 | 50 | 3,000 | 0.33x |" in text  # ratio against BullMQ Node first
    assert "| arqscale | asyncio tasks | 9,300 | 93% | 1.55x |" in text
    step = run.step_json(res, text)
    checks = {c["check"]: c for c in step["checks"]}
    assert checks["throughput: arqscale c50 / BullMQ Node c50 (5,000 jobs)"]["measured"] == "1.67x"
    assert checks["throughput: arqscale c50 / BullMQ Node c50 (5,000 jobs)"]["verdict"] == "**met**"
    assert checks["I/O-bound: arqscale c500, of ideal (10,000/s; 60,000 jobs)"]["verdict"] == "**met**"
    assert checks["Redis CPU per no-op job: arqscale c50 (5,000 jobs)"]["verdict"] == "**MISSED**"
    (tmp_path / "workers.json").write_text(json.dumps(step))


def test_the_full_run_block_carries_command_load_checks_and_each_step(tmp_path: Path) -> None:
    res = made_up_results()
    step = run.step_json(res, run.report(res, run.parse_args(["--quick"]), "python bench/run.py --quick"))
    results = [
        full_run.StepResult(
            "workers", "python bench/run.py --quick --no-write", 61.0, "1.00 0.50 0.20", "2.00 1.00 0.50",
            markdown=step["markdown"], checks=step["checks"],
        ),
        full_run.StepResult(
            "cold-start", "python bench/cold_start.py --rounds 3", 9.0, "2.00 1.00 0.50", "2.10 1.00 0.50",
            markdown="| system | cold start, median s |\n| --- | ---: |\n| arqscale | 0.700 |\n",
        ),
        full_run.StepResult("exporter", "python bench/exporter_latency.py", 360.0, "2", "3", error="killed after 3 s"),
    ]  # fmt: skip
    block = full_run.render(results, "python bench/full_run.py --quick", {"load average before the run": "1.00"})
    assert block.startswith("Command: `python bench/full_run.py --quick`")
    assert "| load average before the run | 1.00 |" in block
    assert "| workers | throughput: arqscale c50 / BullMQ Node c50 (5,000 jobs) | 1.67x | >= 1.5x | **met** |" in block
    assert "#### No-op throughput" in block  # the step's own headings sit under the step's
    assert "`python bench/cold_start.py --rounds 3`: 9 s, load average 2.00 1.00 0.50 before" in block
    assert "**failed: killed after 3 s**" in block

    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{full_run.BEGIN}\nOLD-BLOCK\n{full_run.END}\n\n## After\n")
    full_run.write_docs(block, doc)
    text = doc.read_text()
    assert "OLD-BLOCK" not in text and "intro" in text and text.endswith("## After\n")
    assert text.count(full_run.BEGIN) == 1 and block in text


def test_steps_commands_and_the_json_protocol() -> None:
    workers = next(s for s in full_run.STEPS if s.name == "workers")
    cmd = full_run.step_command(workers, quick=True, json_out=Path("/tmp/x.json"))
    assert cmd[-2:] == ["--json", "/tmp/x.json"] and "--quick" in cmd
    assert full_run.shown(cmd) == "python bench/run.py --quick --no-write"
    for step in (*full_run.STEPS, *full_run.EXTRA_STEPS):
        assert (BENCH / step.script).exists(), step.script
    args = full_run.parse_args(["--skip", "exporter"])
    assert [s.name for s in full_run.chosen_steps(args)] == [s.name for s in full_run.STEPS if s.name != "exporter"]


def test_the_docs_hold_the_full_run_block() -> None:
    text = full_run.DOCS.read_text()
    assert text.count(full_run.BEGIN) == 1 and text.count(full_run.END) == 1


def test_a_run_of_some_systems_reports_only_what_it_measured() -> None:
    # The full run's steady-state step runs arqscale and BullMQ Node only: no rows for the peers it left out.
    args = run.parse_args(["--only", "throughput", "io", "--systems", "arqscale-50", "bullmq-50"])
    res = made_up_results()
    res.partial = True
    text = run.report(res, args, "python bench/run.py --only throughput io")
    assert "not run" not in text and "Pickup latency" not in text and "Enqueue rate" not in text
    assert "| SAQ 0.26 |" in text  # measured in these made-up results, so shown
    checks = [c["check"] for c in run.step_json(res, text)["checks"]]
    assert "throughput: arqscale c50 / BullMQ Node c50 (5,000 jobs)" in checks
    assert not any(c.startswith("pickup") or c.startswith("enqueue") for c in checks)
    assert "| n/a |" not in text.split("No-op throughput")[0]  # the table of checks
    # The same results from a run of everything keep every row, measured or not.
    res.partial = False
    assert any(c["check"].startswith("pickup") for c in run.step_json(res, text)["checks"])
