"""arqscale: arq background jobs on Kubernetes, one worker per queue, autoscaled on exact queue counts."""

from arqscale.models import EnqueueResult, JobRequest, JobState, JobStatus, QueueCounts
from arqscale.producer import Producer, UnknownFunctionError
from arqscale.settings import ArqscaleSettings, RedisSettings
from arqscale.spec import QueueConfigError, QueueSpec, UnknownQueueError, load_queues, parse_queues

__version__ = "0.1.0"

__all__ = [
    "ArqscaleSettings",
    "EnqueueResult",
    "JobRequest",
    "JobState",
    "JobStatus",
    "Producer",
    "QueueConfigError",
    "QueueCounts",
    "QueueSpec",
    "RedisSettings",
    "UnknownFunctionError",
    "UnknownQueueError",
    "__version__",
    "load_queues",
    "parse_queues",
]
