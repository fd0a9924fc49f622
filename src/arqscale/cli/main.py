"""``arqscale`` command line: one subcommand per module under ``arqscale.cli``.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily so ``arqscale worker`` does not pay for the API's imports and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from arqscale import __version__

COMMANDS: dict[str, str] = {
    "worker": "arqscale.cli.worker",
    "autoscale": "arqscale.cli.autoscale",
    "api": "arqscale.cli.api",
    "exporter": "arqscale.cli.exporter",
    "enqueue": "arqscale.cli.enqueue",
    "status": "arqscale.cli.status",
    "cancel": "arqscale.cli.cancel",
    "logs": "arqscale.cli.logs",
    "events": "arqscale.cli.events",
    "dlq": "arqscale.cli.dlq",
    "queue": "arqscale.cli.queue",
    "schedule": "arqscale.cli.schedule",
    "webhooks": "arqscale.cli.webhooks",
    "demo": "arqscale.cli.demo",
    "schema": "arqscale.cli.schema",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arqscale", description="arq background jobs on Kubernetes.")
    parser.add_argument("--version", action="version", version=f"arqscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if only is not None and name != only:
            # Other commands appear in --help by name; their modules load only when chosen.
            sub.add_parser(name, add_help=False)
            continue
        module = _load(name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(args_list)
    result: int = _load(args.command).run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
