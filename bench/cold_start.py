"""Cold start: process start to first job done, the time a scale-up waits for on top of the container's start.

    python bench/cold_start.py                       # arqscale, arq tuned, BullMQ; 10 rounds
    python bench/cold_start.py --rounds 20 --systems arqscale-100 arq-tuned
    python bench/cold_start.py --baseline 9c66859    # also arqscale's worker as of that commit, same run

One private redis-server (``run.Bench``). Each round, for each system in turn (the order rotating): one no-op job
is enqueued first, then the worker process is spawned (``python -m arqscale worker``, ``bench/arq_worker.py`` or
``node bench/bullmq_bench.mjs worker``, exactly as ``bench/run.py`` starts them) and the harness polls Redis
every millisecond until the job is done (its result written / BullMQ's ``completed`` holds it). The figure is
spawn to done, wall clock. Medians and best of the rounds; the load average is printed, since a loaded machine
slows imports most of all. ``--baseline COMMIT`` adds arqscale's worker from that commit's ``src/`` (read from
git into a temporary directory, put first on ``PYTHONPATH``) as one more system.

Bytecode: every Python system runs from compiled bytecode, as installed code does (pip compiles a wheel's
modules when it installs them, the worker image's included; arq and redis-py here are installed that way). The
checkout's ``src/``, the baseline's and ``bench/`` are compiled once before the rounds, in place (their
``__pycache__``, which git ignores): without it, in an environment with ``PYTHONDONTWRITEBYTECODE=1`` (this one,
and the image) the checkout would be compiled from source at every start, ~35 ms of arqscale's figure that no
deployed worker pays. ``--from-source`` measures that way instead (the figures before 2026-12-04 22:00 UTC were):
it removes those trees' ``__pycache__`` and sets ``PYTHONDONTWRITEBYTECODE=1``.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from redis_cost import source_tree
from run import BENCH, ROOT, SYSTEMS, Bench, BenchError, System, default_redis_server, stop, tail

DEFAULT_SYSTEMS = ("arqscale-100", "arq-tuned", "bullmq-50")


def done(bench: Bench, system: System) -> bool:
    if system.family == "bullmq":
        return int(bench.r.zcard("bull:bench:completed")) == 1
    return bench.r.exists(*bench.r.keys("arq:result:*") or ["-"]) == 1


@contextlib.contextmanager
def python_path_first(bench: Bench, src: Path | None) -> Iterator[None]:
    saved = bench.env["PYTHONPATH"]
    if src is not None:
        bench.env["PYTHONPATH"] = os.pathsep.join([str(src), saved])
    try:
        yield
    finally:
        bench.env["PYTHONPATH"] = saved


def cold_start(bench: Bench, system: System, src: Path | None = None) -> float:
    bench.r.flushall()
    bench.client(system.family, "fill", "--n", "1")
    with python_path_first(bench, src):
        proc, log = bench.start_worker(system)
    spawned = time.monotonic()
    try:
        while not done(bench, system):
            if proc.poll() is not None:
                raise BenchError(f"worker exited with {proc.returncode}:\n{tail(log)}")
            if time.monotonic() - spawned > 30:
                raise BenchError(f"no job done after 30 s:\n{tail(log)}")
            time.sleep(0.001)
        return time.monotonic() - spawned
    finally:
        stop(proc)


def without_bytecode(trees: list[Path]) -> None:
    for cache in [c for tree in trees for c in tree.rglob("__pycache__")]:
        shutil.rmtree(cache)


def precompile(trees: list[Path]) -> None:
    """Bytecode for ``trees``, in their ``__pycache__`` (where the workers' imports look; a
    ``PYTHONPYCACHEPREFIX`` would hide the standard library's bytecode from them)."""
    for tree in trees:
        if not compileall.compile_dir(tree, quiet=1):
            raise BenchError(f"cannot compile {tree}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--systems", nargs="+", default=list(DEFAULT_SYSTEMS))
    parser.add_argument("--baseline", default="", help="also arqscale's worker as of this git commit")
    parser.add_argument(
        "--from-source", action="store_true", help="no bytecode for the checkout: compile it at every start"
    )
    args = parser.parse_args(argv)
    runs: list[tuple[System, str, Path | None]] = [(s, s.label, None) for s in SYSTEMS if s.key in args.systems]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            arqscale = next(s for s in SYSTEMS if s.key == "arqscale-100")
            runs.append((arqscale, f"arqscale at {args.baseline}", source_tree(args.baseline, Path(tmp) / "base")))
        times: dict[str, list[float]] = {label: [] for _, label, _ in runs}
        bench = Bench(Path(tmp), default_redis_server())
        trees = [ROOT / "src", BENCH] + [src for _, _, src in runs if src is not None]
        try:
            if args.from_source:
                without_bytecode(trees)
                bench.env["PYTHONDONTWRITEBYTECODE"] = "1"
            else:
                precompile(trees)
            for rnd in range(args.rounds):
                shift = rnd % len(runs)
                for system, label, src in runs[shift:] + runs[:shift]:
                    times[label].append(cold_start(bench, system, src))
        finally:
            bench.close()
    load_end = os.getloadavg()
    code = "from source (compiled at every start)" if args.from_source else "from bytecode compiled beforehand"
    print(f"{args.rounds} rounds; load average {load[0]:.1f} at start, {load_end[0]:.1f} at end; arqscale {code}\n")
    print("| system | cold start, median s | best s | worst s |")
    print("| --- | ---: | ---: | ---: |")
    for label, t in times.items():
        print(f"| {label} | {statistics.median(t):.3f} | {min(t):.3f} | {max(t):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
