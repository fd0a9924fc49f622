"""``arqscale schema``: print the Helm chart's values.schema.json, generated from the queue model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "print the Helm chart's values.schema.json (generated from the queue model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", type=Path, default=None, help="write to this file instead of stdout (e.g. the chart's)"
    )
    parser.add_argument(
        "--check",
        type=Path,
        default=None,
        metavar="FILE",
        help="exit 1 when FILE differs from the generated schema (for CI)",
    )


def run(args: argparse.Namespace) -> int:
    from arqscale.chart.schema import render

    text = render()
    if args.check is not None:
        try:
            current = args.check.read_text()
        except OSError as exc:
            print(f"arqscale schema: cannot read {args.check}: {exc.strerror}", file=sys.stderr)
            return 1
        if current != text:
            fix = f"arqscale schema -o {args.check}"
            print(f"arqscale schema: {args.check} is out of date; run `{fix}`", file=sys.stderr)
            return 1
        return 0
    if args.output is not None:
        args.output.write_text(text)
        return 0
    sys.stdout.write(text)
    return 0
