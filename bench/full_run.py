"""One full benchmark run, every figure of issue 16 the harness produces, written into docs/benchmarks.md.

    python bench/full_run.py                  # every step (about 10 minutes), rewrites the full-run block
    python bench/full_run.py --quick          # every step, smaller (about 4 minutes)
    python bench/full_run.py --steps workers cold-start --no-write
    python bench/full_run.py --list           # the steps, their commands and time budgets

A run is a list of **steps** (``STEPS``), each one benchmark script run as its own process, one after the
other (never two at once: they share the machine's CPUs). Each step names its script, its arguments for the
full and the ``--quick`` run, a time budget (the step is killed at three times it) and how it reports:

- ``json``: the script is given ``--json FILE`` and writes one JSON object there: ``"markdown"`` (the
  step's tables, put into the docs as they are) and optionally ``"checks"`` (rows ``{"check", "measured",
  "target", "verdict"}`` that go into the run's summary of floors). ``bench/run.py``,
  ``bench/exporter_latency.py`` and ``bench/http_enqueue.py`` report this way.
- ``stdout``: the script prints its Markdown tables to stdout (progress to stderr); that text is the step's
  section. ``bench/redis_cost.py`` and ``bench/cold_start.py`` report this way.

To add a benchmark: write a script that does either, then append a ``Step`` to ``STEPS`` (or ``EXTRA_STEPS``
for steps that are not part of the default run). The block this writes sits between ``BEGIN`` and ``END``
in docs/benchmarks.md: the command, the machine, its load average before and after the run and around each
step, the summary of checks, then one section per step with its own command and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench:full-run:begin (written by bench/full_run.py) -->"
END = "<!-- bench:full-run:end -->"


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    script: str  # under bench/
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    budget_s: float  # the full run's expected wall time; killed at 3x
    output: Literal["json", "stdout"] = "stdout"


def words(text: str) -> tuple[str, ...]:
    """A step's arguments written as one line."""
    return tuple(text.split())


STEPS: tuple[Step, ...] = (
    Step(
        "workers",
        "Workers side by side: no-op throughput, Redis cost per job, the I/O-bound load, pickup, enqueue",
        "run.py",
        ("--jobs", "5000", "--io-jobs", "20000", "--repeat", "2", "--io-repeat", "1", "--samples", "100", "--no-write"),
        ("--quick", "--no-write"),
        420,
        "json",
    ),
    Step(
        "workers-steady",
        "Workers side by side at a steady rate: long no-op and I/O-bound runs, arqscale against BullMQ Node",
        "run.py",
        words(
            "--only throughput io --systems arqscale-50 arqscale-100 bullmq-50 bullmq-100 --jobs 40000 "
            "--io-jobs 60000 --repeat 2 --io-repeat 2 --no-write"
        ),
        words("--quick --only throughput io --systems arqscale-50 bullmq-50 --jobs 10000 --io-jobs 20000 --no-write"),
        300,
        "json",
    ),
    Step(
        "redis-cost",
        "Redis cost per job: pickup and finish scripts, this checkout against 9c66859",
        "redis_cost.py",
        ("--n", "4000", "--rounds", "3"),
        ("--n", "2000", "--rounds", "1"),
        60,
    ),
    Step(
        "redis-instructions",
        "Redis instructions per job (callgrind, exact): pickup and finish scripts, this checkout against 9c66859",
        "redis_instructions.py",
        ("--n", "2000", "--baseline", "9c66859"),
        ("--n", "1000", "--baseline", "9c66859"),
        90,
    ),
    Step(
        "cold-start",
        "Cold start: process start to first job done",
        "cold_start.py",
        ("--rounds", "8"),
        ("--rounds", "3"),
        60,
    ),
    Step(
        "exporter",
        "Exporter at 1,000 queues",
        "exporter_latency.py",
        ("--queues", "1000", "--jobs", "200000", "--requests", "500", "--repeat", "2", "--open-rate", "100"),
        ("--queues", "1000", "--jobs", "50000", "--requests", "200", "--repeat", "1"),
        120,
        "json",
    ),
    Step(
        "http-enqueue",
        "HTTP enqueue: 50 concurrent clients, and 1,000 requests/s open loop",
        "http_enqueue.py",
        ("--seconds", "8", "--repeat", "2"),
        ("--seconds", "3", "--repeat", "1"),
        120,
        "json",
    ),
    Step(
        "end-to-end",
        "End to end: enqueue to completion at 5,000 jobs/s, two workers",
        "end_to_end.py",
        ("--rate", "5000", "--seconds", "10"),
        ("--rate", "5000", "--seconds", "4"),
        60,
    ),
    Step(
        "end-to-end-1k",
        "End to end at 1,000 jobs/s, two workers",
        "end_to_end.py",
        ("--rate", "1000", "--seconds", "10"),
        ("--rate", "1000", "--seconds", "4"),
        60,
    ),
    Step(
        "idle-herd",
        "Many idle workers of one queue: Redis cost per trickled job, and idle commands per worker",
        "idle_herd.py",
        ("--workers", "1", "4", "12", "--seconds", "8"),
        ("--workers", "1", "6", "--seconds", "4"),
        180,
    ),
)
EXTRA_STEPS: tuple[Step, ...] = ()


@dataclass
class StepResult:
    step: str
    command: str
    seconds: float
    load_before: str
    load_after: str
    markdown: str = ""
    checks: list[dict[str, str]] = field(default_factory=list)
    error: str = ""


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def step_command(step: Step, quick: bool, json_out: Path | None) -> list[str]:
    cmd = [sys.executable, str(BENCH / step.script), *(step.quick_args if quick else step.args)]
    if step.output == "json" and json_out is not None:
        cmd += ["--json", str(json_out)]
    return cmd


def shown(cmd: Sequence[str]) -> str:
    """The command as a reader types it: ``python bench/x.py ...``, without this run's temporary files."""
    words = ["python", f"bench/{Path(cmd[1]).name}"]
    skip = False
    for word in cmd[2:]:
        if skip:
            skip = False
            continue
        if word == "--json":
            skip = True
            continue
        words.append(word)
    return " ".join(words)


def run_step(step: Step, quick: bool, workdir: Path) -> StepResult:
    json_out = workdir / f"{step.name}.json"
    cmd = step_command(step, quick, json_out)
    result = StepResult(step.name, shown(cmd), 0.0, load_average(), "")
    print(f"== {step.name}: {result.command}", flush=True)
    started = time.monotonic()
    out = workdir / f"{step.name}.stdout"
    with out.open("w") as sink:
        # A stdout step's Markdown to a file; everything else straight through: the step's progress stays visible.
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink if step.output == "stdout" else None, text=True)
        try:
            code: int | None = proc.wait(step.budget_s * 3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
            result.error = f"killed after {step.budget_s * 3:.0f} s (budget {step.budget_s:.0f} s)"
    result.seconds = time.monotonic() - started
    result.load_after = load_average()
    if step.output == "json" and json_out.exists():
        reply: dict[str, Any] = json.loads(json_out.read_text())
        result.markdown = str(reply.get("markdown", ""))
        result.checks = list(reply.get("checks", []))
        failed = reply.get("errors") or {}
        if failed:  # the step ran, some of its measurements did not: name them
            result.error = "; ".join(f"{name}: {str(why).splitlines()[0][:120]}" for name, why in failed.items())
    elif step.output == "stdout":
        result.markdown = out.read_text()
    if code and not result.error:
        result.error = f"exit status {code}"
    print(f"   {result.seconds:.0f} s{'; ' + result.error if result.error else ''}", flush=True)
    return result


def render(results: Sequence[StepResult], command: str, facts: dict[str, str]) -> str:
    """The docs block: command, machine and load, the checks of every step, then each step's section."""
    lines = [f"Command: `{command}`", "", "| machine | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    checks = [(r.step, c) for r in results for c in r.checks]
    if checks:
        lines += ["", "### Checks against the floors", "", "| step | check | measured | target | verdict |"]
        lines += ["| --- | --- | ---: | ---: | --- |"]
        lines += [
            f"| {step} | {c.get('check', '')} | {c.get('measured', '')} | {c.get('target', '')} "
            f"| {c.get('verdict', '')} |"
            for step, c in checks
        ]
    titles = {s.name: s.title for s in (*STEPS, *EXTRA_STEPS)}
    for r in results:
        lines += ["", f"### {titles.get(r.step, r.step)}", ""]
        lines.append(
            f"`{r.command}`: {r.seconds:.0f} s, load average {r.load_before} before, {r.load_after} after"
            + (f"; **failed: {r.error}**" if r.error else "")
        )
        body = demote_headings(r.markdown.strip())
        if body:
            lines += ["", body]
    return "\n".join(lines) + "\n"


def demote_headings(markdown: str) -> str:
    """A step's own ``###`` headings become ``####``: they sit under the step's heading."""
    return "\n".join("#" + line if line.startswith("###") else line for line in markdown.splitlines())


def write_docs(block: str, path: Path = DOCS) -> None:
    """Replace the full-run block of docs/benchmarks.md, keeping the text around it."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path.relative_to(ROOT)} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{block}{END}{rest.split(END, 1)[1]}")


def machine(started_load: str) -> dict[str, str]:
    sys.path.insert(0, str(BENCH))
    from run import default_redis_server, machine_facts  # the same facts as bench/run.py's own report

    facts = machine_facts(default_redis_server())
    facts.pop("load average at start", None)
    facts["load average before the run"] = started_load
    return facts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [s.name for s in (*STEPS, *EXTRA_STEPS)]
    parser.add_argument("--quick", action="store_true", help="each step's smaller version")
    parser.add_argument("--steps", nargs="+", choices=names, help="only these steps (default: every step of STEPS)")
    parser.add_argument("--skip", nargs="+", choices=names, default=[], help="leave these steps out")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True, help="rewrite the docs block")
    parser.add_argument("--json", type=Path, help="also write every step's result here")
    parser.add_argument("--list", action="store_true", help="print the steps and exit")
    return parser.parse_args(argv)


def chosen_steps(args: argparse.Namespace) -> list[Step]:
    every = {s.name: s for s in (*STEPS, *EXTRA_STEPS)}
    names = args.steps or [s.name for s in STEPS]
    return [every[n] for n in names if n not in args.skip]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    steps = chosen_steps(args)
    if args.list:
        for step in steps:
            print(f"{step.name:12} {shown(step_command(step, args.quick, None))}  (budget {step.budget_s:.0f} s)")
        return 0
    command = " ".join(["python bench/full_run.py", *(argv if argv is not None else sys.argv[1:])])
    before = load_average()
    facts = machine(before)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="arqscale-full-run-") as tmp:
        results = [run_step(step, args.quick, Path(tmp)) for step in steps]
    facts["load average after the run"] = load_average()
    facts["wall time"] = f"{time.monotonic() - started:.0f} s"
    if args.quick:
        facts["run"] = "**quick run** (`--quick`): smaller samples, one repeat; for a trend, not for the record"
    block = render(results, command, facts)
    print()
    print(block)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    if args.write:
        write_docs(block)
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
