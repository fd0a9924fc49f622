"""arqscale: arq background jobs on Kubernetes, one worker per queue, autoscaled on exact queue counts."""

from arqscale.core.connection import create_redis
from arqscale.core.event_stream import Events, JobCancelled, JobFailed, WaitTimeout
from arqscale.core.events import EVENT_NAMES, Event
from arqscale.core.models import EnqueueResult, JobRequest, JobState, JobStatus, QueueCounts
from arqscale.core.producer import NotReplicated, Producer, UnknownFunctionError
from arqscale.core.schedule_spec import Schedule, from_arq_cron
from arqscale.core.schedules import Schedules, ScheduleView
from arqscale.core.settings import ArqscaleSettings, RedisSettings
from arqscale.core.spec import QueueConfigError, QueueSpec, UnknownQueueError, demo_queues, load_queues, parse_queues

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
