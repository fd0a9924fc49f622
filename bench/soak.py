"""Soak: the chaos test (tests/system/test_chaos.py) with larger numbers, for as long as you like.

    python bench/soak.py --jobs 50000 --minutes 10 --workers 6 --max-workers 10
    python bench/soak.py --jobs 20000 --minutes 4 --write docs/reliability.md

Same harness as the test (``tests/chaos_tasks.py``): a private AOF redis-server, real ``arqscale
worker`` processes drained (SIGTERM), killed (SIGKILL) and started at random, Redis restarted now and
then, every job's runs recorded in Redis and accounted for afterwards. Prints the figures table row
(and the JSON summary); ``--write FILE`` puts the row into FILE's table between the
``<!-- soak:begin -->`` / ``<!-- soak:end -->`` markers. Exits 1 when a job was lost or a rerun has
no kill to explain it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chaos_tasks import TABLE_HEADER, ChaosConfig, ChaosReport, run_chaos, run_label

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--minutes", type=float, default=4.0, help="enqueue (and chaos) period")
    p.add_argument("--workers", type=int, default=4, help="workers at start; the chaos keeps at least 2")
    p.add_argument("--max-workers", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--lease", type=float, default=2.0, help="lease_seconds of the queue")
    p.add_argument("--redis-restarts", type=int, default=3)
    p.add_argument("--kill-share", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--write", type=Path, default=None, help="update the soak table in this markdown file")
    p.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: a temporary dir)")
    return p.parse_args(argv)


def update_table(path: Path, row: str) -> None:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers to write the table between")
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    header = set(TABLE_HEADER.splitlines())
    rows = [line for line in body.strip().splitlines() if line.startswith("| ") and line not in header]
    rows.append(row)
    path.write_text(f"{head}{BEGIN}\n{TABLE_HEADER}\n" + "\n".join(rows) + f"\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = ChaosConfig(
        jobs=args.jobs,
        workers=args.workers,
        max_workers=args.max_workers,
        concurrency=args.concurrency,
        lease_seconds=args.lease,
        poll_interval=0.1,
        job_timeout=5.0,
        drain_timeout=5.0,
        sleep_ms=(10, 150),
        enqueue_seconds=args.minutes * 60,
        chaos_every=(0.8, 2.0),
        kill_share=args.kill_share,
        redis_restarts=args.redis_restarts,
        settle_timeout=300.0,
        seed=args.seed,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="arqscale-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: ChaosReport = run_chaos(workdir, config)
    label = run_label("soak", config)
    row = report.markdown_row(label)
    summary = report.summary()
    (workdir / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"{TABLE_HEADER}\n{row}\n")
    print(json.dumps(summary, indent=2, default=str))
    print(f"logs: {workdir}", file=sys.stderr)
    if args.write is not None:
        update_table(args.write, row)
    ok = report.lost == 0 and not report.unexplained
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
