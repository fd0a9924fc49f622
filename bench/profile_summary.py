"""Summarise py-spy collapsed stacks (``python bench/run.py --profile DIR`` writes them).

    python bench/profile_summary.py DIR/003-arqscale-100.txt [--top 25] [--match arqscale] [--steady]

Prints where the samples went: self time per function (the frame on top of the stack), and
inclusive time per function (any frame on the stack), as percentages of all samples. ``--match``
keeps only functions whose frame text contains that string in the inclusive table. ``--steady`` drops
the samples taken while modules were being imported (start-up), leaving the event loop's work.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LINE_RE = re.compile(r" \((.*?):\d+\)$")


def function_of(frame: str) -> str:
    """``Worker.run (arq/worker.py:313)`` -> ``Worker.run (arq/worker.py)``: one entry per function."""
    return LINE_RE.sub(lambda m: f" ({m.group(1)})", frame)


def summarise(path: Path, steady: bool = False) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        if steady and "_find_and_load" in stack:
            continue
        frames = [function_of(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="inclusive table: only frames containing this")
    parser.add_argument("--steady", action="store_true", help="leave out samples taken while importing")
    args = parser.parse_args()
    total, own, inclusive = summarise(args.profile, args.steady)
    print(f"{total} samples in {args.profile}")
    print("\nself time:")
    for frame, count in own.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print(f"\ninclusive time{f' (frames containing {args.match!r})' if args.match else ''}:")
    shown = [(f, c) for f, c in inclusive.most_common() if args.match in f][: args.top]
    for frame, count in shown:
        print(f"  {100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
