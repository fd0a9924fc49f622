"""arqscale: arq background jobs on Kubernetes, one worker per queue, autoscaled on exact queue counts."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arqscale.core.connection import create_redis
    from arqscale.core.event_stream import Events, JobCancelled, JobFailed, WaitTimeout
    from arqscale.core.events import EVENT_NAMES, Event
    from arqscale.core.models import EnqueueResult, JobRequest, JobState, JobStatus, QueueCounts
    from arqscale.core.producer import NotReplicated, Producer, UnknownFunctionError
    from arqscale.core.schedule_spec import Schedule, from_arq_cron
    from arqscale.core.schedules import Schedules, ScheduleView
    from arqscale.core.settings import ArqscaleSettings, RedisSettings
    from arqscale.core.spec import (
        QueueConfigError,
        QueueSpec,
        UnknownQueueError,
        demo_queues,
        load_queues,
        parse_queues,
    )

__version__ = "0.1.0"

__all__ = [
    "EVENT_NAMES",
    "ArqscaleSettings",
    "EnqueueResult",
    "Event",
    "Events",
    "JobCancelled",
    "JobFailed",
    "JobRequest",
    "JobState",
    "JobStatus",
    "NotReplicated",
    "Producer",
    "QueueConfigError",
    "QueueCounts",
    "QueueSpec",
    "RedisSettings",
    "Schedule",
    "ScheduleView",
    "Schedules",
    "UnknownFunctionError",
    "UnknownQueueError",
    "WaitTimeout",
    "__version__",
    "create_redis",
    "demo_queues",
    "from_arq_cron",
    "load_queues",
    "parse_queues",
]

# The public names are imported on first use (PEP 562), not when ``arqscale`` is: a worker process starts
# with ``arqscale.cli`` and must not pay for the producer, the event readers and pydantic-settings' models
# it never uses (bench/cold_start.py). ``from arqscale import Producer`` works as before.
_LAZY: dict[str, str] = {
    "create_redis": "arqscale.core.connection",
    "Events": "arqscale.core.event_stream",
    "JobCancelled": "arqscale.core.event_stream",
    "JobFailed": "arqscale.core.event_stream",
    "WaitTimeout": "arqscale.core.event_stream",
    "EVENT_NAMES": "arqscale.core.events",
    "Event": "arqscale.core.events",
    "EnqueueResult": "arqscale.core.models",
    "JobRequest": "arqscale.core.models",
    "JobState": "arqscale.core.models",
    "JobStatus": "arqscale.core.models",
    "QueueCounts": "arqscale.core.models",
    "NotReplicated": "arqscale.core.producer",
    "Producer": "arqscale.core.producer",
    "UnknownFunctionError": "arqscale.core.producer",
    "Schedule": "arqscale.core.schedule_spec",
    "from_arq_cron": "arqscale.core.schedule_spec",
    "Schedules": "arqscale.core.schedules",
    "ScheduleView": "arqscale.core.schedules",
    "ArqscaleSettings": "arqscale.core.settings",
    "RedisSettings": "arqscale.core.settings",
    "QueueConfigError": "arqscale.core.spec",
    "QueueSpec": "arqscale.core.spec",
    "UnknownQueueError": "arqscale.core.spec",
    "demo_queues": "arqscale.core.spec",
    "load_queues": "arqscale.core.spec",
    "parse_queues": "arqscale.core.spec",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'arqscale' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
