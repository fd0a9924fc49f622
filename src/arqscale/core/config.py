"""Everything a process needs at start-up, loaded and validated in one call."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from pydantic import ValidationError

from arqscale.core.logs import setup_logging
from arqscale.core.settings import ArqscaleSettings, RedisSettings
from arqscale.core.spec import QueueConfigError, QueueSpec, demo_queues, load_queues


@dataclass(frozen=True)
class Config:
    settings: ArqscaleSettings
    redis: RedisSettings
    queues: dict[str, QueueSpec]


class ConfigError(RuntimeError):
    """Start-up configuration that cannot work; the message says which setting and why."""


def load_config() -> Config:
    """Read settings from the environment and the queues file. Raises ConfigError with a clear message."""
    try:
        settings = ArqscaleSettings()
        redis = RedisSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"invalid environment settings: {problems}") from None
    try:
        queues = demo_queues() if settings.queues_file is None else load_queues(settings.queues_file)
    except QueueConfigError as exc:
        raise ConfigError(str(exc)) from None
    return Config(settings=settings, redis=redis, queues=queues)


def load_config_or_exit() -> Config:
    """For CLI entry points: print the problem (no traceback) and exit 2 on bad configuration."""
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"arqscale: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(config.settings.log_level, config.settings.log_format)
    return config
