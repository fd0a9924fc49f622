"""Everything a process needs at start-up, loaded and validated in one call."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from arqscale.core.connection import check_topology
from arqscale.core.logs import setup_logging
from arqscale.core.settings import ArqscaleSettings, RedisSettings
from arqscale.core.spec import QueueConfigError, QueueSpec, demo_queues, load_queues

# `arqscale demo` writes this file into its directory while it runs: its pid and its Redis URL.
DEMO_STATE_FILE = "stack.json"
DEFAULT_DEMO_DIR = Path(".arqscale/demo")


@dataclass(frozen=True)
class Config:
    settings: ArqscaleSettings
    redis: RedisSettings
    queues: dict[str, QueueSpec]
    # Where the Redis settings came from, when not from the environment: said on stderr by the CLI.
    redis_source: str | None = None


@dataclass(frozen=True)
class RunningDemo:
    redis_url: str
    state_file: Path


def redis_configured(env: Mapping[str, str]) -> bool:
    """Any ``REDIS_*`` variable set: the user chose a Redis (names are case-insensitive, as in the settings)."""
    return any(name.upper().startswith("REDIS_") and value for name, value in env.items())


def running_demo(env: Mapping[str, str]) -> RunningDemo | None:
    """The `arqscale demo` running from this directory (or ``ARQSCALE_DEMO_DIR``), if one is alive."""
    path = Path(env.get("ARQSCALE_DEMO_DIR") or DEFAULT_DEMO_DIR) / DEMO_STATE_FILE
    try:
        data = json.loads(path.read_text())
        pid, url = data["pid"], data["redis_url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(pid, int) or not isinstance(url, str) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)  # signal 0: does it exist (a demo killed without cleaning up left the file)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return RunningDemo(url, path)


class ConfigError(RuntimeError):
    """Start-up configuration that cannot work; the message says which setting and why."""


def load_config(*, find_demo: bool = False) -> Config:
    """Read settings from the environment and the queues file. Raises ConfigError with a clear message.

    ``find_demo``: with no ``REDIS_*`` variable set, use the Redis of an `arqscale demo` running from
    this directory instead of the default localhost:6379 (a second terminal's CLI, as the README shows).
    """
    source = None
    try:
        settings = ArqscaleSettings()
        redis = RedisSettings()
        if not redis_configured(os.environ):
            demo = running_demo(os.environ) if find_demo else None
            if demo is not None:
                redis = RedisSettings(url=demo.redis_url)
                source = f"the running demo's ({demo.state_file}); set REDIS_URL to read another"
            else:
                source = "the default: no REDIS_URL or REDIS_HOST set"
    except ValidationError as exc:
        problems = "; ".join(
            # A check across fields (REDIS_URL with REDIS_SENTINELS) has no location; its message names them.
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"].removeprefix("Value error, ")
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"invalid environment settings: {problems}") from None
    try:
        queues = demo_queues() if settings.queues_file is None else load_queues(settings.queues_file)
    except QueueConfigError as exc:
        raise ConfigError(str(exc)) from None
    return Config(settings=settings, redis=redis, queues=queues, redis_source=source)


def topology_message(config: Config, problem: str) -> str:
    """The line a process prints before it exits 2 on a problem ``check_topology`` found."""
    return f"arqscale: Redis {config.redis.display_url()}: {problem}"


def load_config_or_exit(*, topology: bool = True) -> Config:
    """For CLI entry points: print the problem (no traceback) and exit 2 on bad configuration.

    Finds a running demo (see ``load_config``) and says so on stderr, so a second terminal never reads
    another Redis in silence. ``topology=False`` leaves ``check_topology`` (a blocking connection and a round
    trip) to the caller: the worker runs it beside its first pickup (``arqscale.worker.process``).
    """
    try:
        config = load_config(find_demo=True)
    except ConfigError as exc:
        print(f"arqscale: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    problem = check_topology(config.redis) if topology else None
    if problem is not None:
        print(topology_message(config, problem), file=sys.stderr)
        raise SystemExit(2)
    setup_logging(config.settings.log_level, config.settings.log_format)
    if config.redis_source is not None:
        print(f"arqscale: Redis {config.redis.display_url()}: {config.redis_source}", file=sys.stderr)
    return config
