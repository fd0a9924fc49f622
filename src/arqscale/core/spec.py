"""The queue spec: the single source of truth for a queue's settings.

The worker, the exporter, the API, the CLI and the Helm chart's ``values.schema.json`` all read this
one model. A queues file is a map keyed by queue name::

    queues:
      email:
        functions: [myapp.tasks.send_email]
        concurrency: 20
        job_timeout: 60
        max_tries: 5
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from arqscale.core.schedule_spec import SCHEDULE_NAME_RE, Schedule, ScheduleFields
from arqscale.core.webhook_spec import Webhooks

QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
FUNCTION_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

Seconds = Annotated[float, Field(gt=0)]


class _Model(BaseModel):
    # Unknown keys are typos, and a typo in a queue file must stop start-up, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backoff(_Model):
    """Delay before retry ``n`` (1-based): ``delay`` (fixed) or ``delay * 2**(n-1)`` capped (exponential)."""

    strategy: Literal["fixed", "exponential"] = "exponential"
    delay: float = Field(default=1.0, ge=0, description="seconds before the first retry")
    max_delay: float = Field(default=300.0, ge=0, description="cap for exponential backoff, seconds")
    jitter: float = Field(default=0.1, ge=0, le=1, description="random extra, as a fraction of the delay")


class RateLimit(_Model):
    """At most ``max_jobs`` job starts in any ``interval`` seconds (a sliding window), across all its workers."""

    max_jobs: int = Field(gt=0)
    interval: float = Field(default=1.0, ge=0.001, description="window length in seconds (at least 1 ms)")

    @property
    def interval_ms(self) -> int:
        return round(self.interval * 1000)


GROUP_NAME_MAX = 200  # characters of a per-key limit's key (user id, tenant, account)


class GroupLimits(_Model):
    """Per-key limits (docs/design.md, "Per-key limits"): each key's running jobs and starts are limited
    on their own, across all the queue's workers, and a key at its limit never holds up the others.

    A job's key is the ``group`` given at enqueue (our producer, API, CLI), else the value of the keyword
    argument named by ``key`` (JSON queues only: the pickup script reads the payload; a pickled payload
    cannot be read in Redis). Jobs without a key are not limited.
    """

    key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="keyword argument whose value is the job's key (e.g. user_id); JSON queues only",
    )
    concurrency: int | None = Field(default=None, ge=1, le=100_000, description="running jobs per key")
    rate_limit: RateLimit | None = Field(default=None, description="starts per key in any interval")

    @model_validator(mode="after")
    def _limits_something(self) -> GroupLimits:
        if self.concurrency is None and self.rate_limit is None:
            raise ValueError("group: set concurrency, rate_limit or both (a key without a limit limits nothing)")
        return self


class Retention(_Model):
    """How long results stay readable, and how many the completed/failed counts keep."""

    completed_seconds: int = Field(default=3600, ge=0, description="keep completed results this long")
    completed_max: int = Field(default=10_000, ge=0, description="keep at most this many completed results")
    failed_seconds: int = Field(default=7 * 86400, ge=0, description="keep dead-letter entries this long")
    failed_max: int = Field(default=10_000, ge=0, description="keep at most this many dead-letter entries")


class JobLogSettings(_Model):
    """Lines a task writes to its job's log (``await ctx["log"](text)`` and the ``logging`` module while the
    job runs), capped per job across all its tries; kept and deleted with the job's result."""

    max_lines: int = Field(default=1000, ge=0, le=100_000, description="lines kept per job (0 = keep no log)")
    max_bytes: int = Field(default=262_144, ge=0, le=16_777_216, description="bytes kept per job, all lines")
    max_line_chars: int = Field(default=8192, ge=1, le=1_048_576, description="a longer line is clipped")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="least level of `logging` records copied to the job's log"
    )
    capture_logging: bool = Field(default=True, description="copy `logging` records emitted while the job runs")


class EventSettings(_Model):
    """The queue's event stream (docs/events.md): every change of a job's state, written by the script that
    makes it, in ``arqscale:<queue>:events``. The totals hash is kept whatever this says."""

    enabled: bool = Field(default=True, description="record job events in the queue's Redis stream")
    max_len: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="keep about this many recent events (XADD MAXLEN ~: Redis trims whole nodes, so a few more)",
    )

    @property
    def stream_max(self) -> int:
        """What the scripts get: 0 writes no events."""
        return self.max_len if self.enabled else 0


# The event stream's default cap on a queue with webhooks. The stream is trimmed by length (Redis 7.0 cannot
# trim by acknowledgement), so events written while no deliverer runs are lost to webhooks once trimmed: 100,000
# entries (about 9 MB, docs/webhooks.md) outlast a 10-minute outage at 50 jobs/s.
WEBHOOK_EVENTS_MAX_LEN = 100_000

AutoscalingMetric = Literal["waiting", "backlog", "oldest_waiting", "wait_target"]


def _default_metrics() -> list[AutoscalingMetric]:
    return ["backlog"]


class Autoscaling(_Model):
    """Hints the Helm chart turns into an HPA (or a KEDA ScaledObject)."""

    enabled: bool = True
    min_replicas: int = Field(default=1, ge=0, description="0 only works with the KEDA engine")
    max_replicas: int = Field(default=10, ge=1)
    metrics: list[AutoscalingMetric] = Field(default_factory=_default_metrics, min_length=1)
    target_per_replica: float = Field(default=20, gt=0, description="jobs per replica for waiting/backlog")
    target_oldest_waiting_seconds: float = Field(default=30, gt=0, description="age target for oldest_waiting")
    target_wait_seconds: float = Field(
        default=30, gt=0, description="wait_target: the workers that keep a job's wait under this many seconds"
    )

    @model_validator(mode="after")
    def _replicas_ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        return self


class QueueSpec(_Model):
    """One queue: what runs on it and how."""

    name: str = Field(pattern=QUEUE_NAME_RE.pattern, description="the queue's name, as in the queues map")
    backend: Literal["arq", "bullmq"] = Field(
        default="arq", description="arq queues are run and counted; bullmq queues are only counted"
    )
    functions: list[Annotated[str, Field(pattern=FUNCTION_PATH_RE.pattern)]] = Field(
        default_factory=list, description="import paths of the task functions, e.g. myapp.tasks.send_email"
    )
    redis_key: str | None = Field(default=None, description="arq queue key; default arq:queue:<name>")
    prefix: str = Field(default="bull", description="BullMQ key prefix (backend: bullmq only)")
    concurrency: int = Field(default=10, ge=1, le=10_000, description="jobs in flight per worker process")
    job_timeout: Seconds = Field(default=300.0, description="seconds one try may run")
    max_tries: int = Field(default=5, ge=1, le=1000)
    backoff: Backoff = Field(default_factory=Backoff)
    priority_levels: int = Field(default=3, ge=3, le=10, description="priorities 0 (most urgent) .. levels-1")
    default_priority: int | None = Field(default=None, ge=0, description="priority of jobs that name none")
    rate_limit: RateLimit | None = None
    group: GroupLimits | None = Field(default=None, description="limits per job key (user, tenant, account)")
    retention: Retention = Field(default_factory=Retention)
    logs: JobLogSettings = Field(default_factory=JobLogSettings, description="per-job log lines from tasks")
    webhooks: Webhooks | None = Field(default=None, description="signed HTTP calls on this queue's job events")
    events: EventSettings = Field(default_factory=EventSettings)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    serializer: Literal["json", "pickle"] = Field(
        default="json", description="json is data-only; pickle only for existing arq producers you trust"
    )
    drain_timeout: Seconds | None = Field(default=None, description="SIGTERM grace for running jobs; >= job_timeout")
    lease_seconds: Seconds = Field(default=10.0, description="heartbeat lease: a dead worker's jobs rerun after this")
    poll_interval: Seconds = Field(default=0.5, description="fallback poll for jobs from plain arq producers")
    prefetch: bool = Field(
        default=True,
        description="keep a few leased jobs ready to start when a slot frees; sized to the recent run times so a "
        "job waits about 5 ms in it, none for long jobs; never with rate_limit or group",
    )
    schedules: dict[Annotated[str, Field(pattern=SCHEDULE_NAME_RE.pattern)], ScheduleFields] = Field(
        default_factory=dict,
        description="jobs enqueued on a cron expression or an interval by this queue's workers, keyed by name",
    )

    @model_validator(mode="before")
    @classmethod
    def _webhook_stream_cap(cls, data: Any) -> Any:
        """A queue with webhooks keeps more events unless its spec says how many (see WEBHOOK_EVENTS_MAX_LEN)."""
        if not isinstance(data, dict):
            return data
        hooks, events = data.get("webhooks"), data.get("events")
        declared = isinstance(hooks, dict) and (hooks.get("endpoints") or hooks.get("callbacks"))
        if declared and (events is None or (isinstance(events, dict) and "max_len" not in events)):
            data = {**data, "events": {**(events or {}), "max_len": WEBHOOK_EVENTS_MAX_LEN}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> QueueSpec:
        if self.backend == "arq" and not self.functions:
            raise ValueError("functions: an arq queue needs at least one task function")
        names = [path.rsplit(".", 1)[1] for path in self.functions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"functions: two functions share the name {', '.join(dupes)}")
        if self.default_priority is not None and self.default_priority >= self.priority_levels:
            raise ValueError(
                f"default_priority ({self.default_priority}) must be below priority_levels ({self.priority_levels})"
            )
        if self.group is not None and self.group.key is not None and self.serializer != "json":
            raise ValueError(
                f"group.key: a key taken from the keyword argument {self.group.key!r} needs serializer: json "
                "(Redis cannot read a pickled payload); on pickle queues give each job its group at enqueue"
            )
        if self.drain_timeout is not None and self.drain_timeout < self.job_timeout:
            raise ValueError(
                f"drain_timeout ({self.drain_timeout}) must be at least job_timeout ({self.job_timeout}), "
                "or a draining worker would cut running jobs short"
            )
        if self.backend == "bullmq" and "wait_target" in self.autoscaling.metrics:
            # The signal needs the arq worker scripts' counters; BullMQ's Node workers write none of ours.
            raise ValueError("autoscaling.metrics: wait_target needs an arq queue (backend: arq)")
        self._check_schedules()
        if self.webhooks is not None and self.webhooks.active:
            if self.backend != "arq":
                raise ValueError("webhooks: only arq queues have job events")
            if not self.events.enabled:
                raise ValueError("webhooks: they are made from the queue's events; set events.enabled: true")
        return self

    def _check_schedules(self) -> None:
        for name, schedule in self.schedules.items():
            if self.backend != "arq":
                raise ValueError(f"schedules.{name}: only arq queues run schedules")
            known = schedule.function in self.functions or schedule.function in self.function_names
            if not known:
                raise ValueError(
                    f"schedules.{name}.function: {schedule.function!r} is not one of this queue's functions "
                    f"({', '.join(sorted(self.function_names))})"
                )
        if self.schedules and self.autoscaling.enabled and self.autoscaling.min_replicas == 0:
            # The queue's workers are what fires the schedules: with none running, no tick would run.
            raise ValueError("schedules: a queue with schedules needs autoscaling.min_replicas of at least 1")

    def declared_schedules(self) -> list[Schedule]:
        """The ``schedules:`` of this spec, each with its name."""
        return [Schedule(name=name, **fields.model_dump()) for name, fields in self.schedules.items()]

    @property
    def queue_key(self) -> str:
        return self.redis_key or f"arq:queue:{self.name}"

    @property
    def normal_priority(self) -> int:
        return self.priority_levels // 2 if self.default_priority is None else self.default_priority

    @property
    def effective_drain_timeout(self) -> float:
        return self.drain_timeout if self.drain_timeout is not None else self.job_timeout

    @property
    def function_names(self) -> dict[str, str]:
        """Task name (what producers enqueue) -> import path."""
        return {path.rsplit(".", 1)[1]: path for path in self.functions}


class QueuesFile(_Model):
    """The queues file, and the chart's ``queues:`` value: a map keyed by queue name."""

    queues: dict[str, dict[str, Any]] = Field(min_length=1)


class UnknownQueueError(LookupError):
    def __init__(self, queue: str, known: Iterable[str]) -> None:
        super().__init__(f"unknown queue {queue!r}; known queues: {', '.join(sorted(known))}")
        self.queue = queue


def arq_queue(specs: Mapping[str, QueueSpec], name: str) -> QueueSpec:
    """The arq queue called ``name`` (the ones jobs can be enqueued on), or UnknownQueueError naming the rest."""
    spec = specs.get(name)
    if spec is None or spec.backend != "arq":
        raise UnknownQueueError(name, [n for n, s in specs.items() if s.backend == "arq"])
    return spec


class QueueConfigError(ValueError):
    """A queues file that cannot be used; the message names the queue and the field."""


def parse_queues(data: object, source: str = "queues") -> dict[str, QueueSpec]:
    """Validate a ``{"queues": {name: {...}}}`` document into specs, naming queue and field on error."""
    if not isinstance(data, dict) or not isinstance(data.get("queues"), dict) or not data["queues"]:
        raise QueueConfigError(f"{source}: expected a non-empty `queues:` map keyed by queue name")
    unknown_top = sorted(set(data) - {"queues"})
    if unknown_top:
        raise QueueConfigError(f"{source}: unknown top-level key(s): {', '.join(map(str, unknown_top))}")
    specs: dict[str, QueueSpec] = {}
    for name, body in data["queues"].items():
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise QueueConfigError(f"{source}: queue {name!r}: expected a map of settings, got {type(body).__name__}")
        if "name" in body and body["name"] != name:
            raise QueueConfigError(f"{source}: queue {name!r}: name: differs from the map key ({body['name']!r})")
        try:
            specs[str(name)] = QueueSpec.model_validate({**body, "name": str(name)})
        except ValidationError as exc:
            raise QueueConfigError(f"{source}: queue {name!r}: {_describe(exc)}") from None
    keys = [s.queue_key for s in specs.values() if s.backend == "arq"]
    clash = sorted({k for k in keys if keys.count(k) > 1})
    if clash:
        raise QueueConfigError(f"{source}: two queues share the Redis key {', '.join(clash)}")
    return specs


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "(queue)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def load_queues(path: Path | str | None = None) -> dict[str, QueueSpec]:
    """The queues of this deployment, as every arqscale process loads them.

    ``load_queues()`` reads the YAML file named by ``ARQSCALE_QUEUES_FILE``, or returns the built-in demo
    queues when that is unset; ``load_queues(path)`` reads that file. A producer must see the queues its
    workers run (serializer, functions, priorities), so there is no argument that silently means "the
    demo queues": ask for those by name with ``demo_queues()``.
    """
    if path is None:
        from arqscale.core.settings import QueuesFileSettings

        path = QueuesFileSettings().queues_file
        if path is None:
            return demo_queues()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise QueueConfigError(f"{path}: cannot read queues file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # One line (where and what), not PyYAML's multi-line picture: start-up errors are one line.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise QueueConfigError(f"{path}: not valid YAML: {where}{problem}") from None
    return parse_queues(data, str(path))


def demo_queues() -> dict[str, QueueSpec]:
    """The built-in demo queues (``arqscale demo``, and every process when no queues file is set)."""
    from arqscale.core.demo_queues import DEMO_QUEUES

    return parse_queues(DEMO_QUEUES, "built-in demo queues")
