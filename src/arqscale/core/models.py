"""Value objects shared by the producer, the API, the CLI and the exporter."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from arqscale.core.webhook_spec import check_url

# The ids our own enqueue paths accept: 1-128 of A-Z a-z 0-9 _ . : - but not "." or "..", which URL clients
# drop as dot segments, so no browser could name them in a path (issue 10). Written without look-ahead,
# which JSON Schema's regex dialect lacks; the length is JOB_ID_MAX_LENGTH.
JOB_ID_PATTERN = r"^(?:[A-Za-z0-9_.:\-]*[A-Za-z0-9_:\-][A-Za-z0-9_.:\-]*|\.{3,})$"
JOB_ID_MAX_LENGTH = 128

# Every model here is built on first use (`defer_build`), not at import: a worker imports this module and uses
# none of them until a job reports progress or dies (cold start, bench/cold_start.py).


class JobRequest(BaseModel):
    """One job to enqueue: the body of ``POST /v1/queues/{queue}/jobs``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    function: str = Field(min_length=1, max_length=200, description="task name, e.g. send_email")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=JOB_ID_MAX_LENGTH,
        pattern=JOB_ID_PATTERN,
        description="idempotency key: 1-128 of A-Z a-z 0-9 _ . : - (not . or ..); jobs from plain arq may have any "
        "id, and every route that takes an id takes those too",
    )
    defer_seconds: float | None = Field(default=None, ge=0, le=365 * 86400)
    priority: int | None = Field(default=None, ge=0, description="0 is the most urgent")
    group: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the job's key for the queue's per-key limits (user, tenant, account); see the queue's group",
    )
    callback_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="an https:// (or http://) URL that gets this job's events as signed webhooks; the queue must "
        "allow callbacks (webhooks.callbacks in its spec)",
    )

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)


class JobState(StrEnum):
    """A job's state (``GET /v1/jobs/{id}``, ``arqscale status JOB``). ``completed`` and ``failed`` are the
    words the counts and the job lists use too; docs/api.md maps the rest."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"


class EnqueueResult(BaseModel):
    model_config = ConfigDict(defer_build=True)

    job_id: str
    queue: str
    status: JobState
    created: bool = Field(description="false when a job with this id already existed (idempotent enqueue)")


class Progress(BaseModel):
    model_config = ConfigDict(defer_build=True)

    percent: float = Field(ge=0, le=100)
    message: str | None = None
    updated_at: float


class JobStatus(BaseModel):
    """What ``GET /v1/jobs/{job_id}`` answers."""

    model_config = ConfigDict(
        extra="forbid", defer_build=True
    )  # and a field named kwargs is ours, not the constructor's

    job_id: str
    state: JobState
    queue: str | None = None
    function: str | None = None
    priority: int | None = None
    attempts: int = 0
    progress: Progress | None = None
    result: Any = None
    error: str | None = None
    args: Any = Field(default=None, description="the positional arguments (JSON queues; absent for pickle queues)")
    kwargs: Any = Field(default=None, description="the keyword arguments (JSON queues; absent for pickle queues)")
    enqueued_at: float | None = None
    scheduled_for: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    note: str | None = Field(default=None, description="why a field is empty, e.g. payload not shown (pickle queue)")
    held: bool = Field(
        default=False,
        description="queued, but held back by its key's per-key limit (out of the queue's line until a job of "
        "the key ends or the key's rate window frees a start)",
    )
    group: str | None = Field(default=None, description="the job's per-key-limit key, when known (given or held)")


class QueueCounts(BaseModel):
    """BullMQ-style counts of one queue, exact at the moment they were read."""

    model_config = ConfigDict(defer_build=True)

    queue: str
    waiting: int = 0
    active: int = 0
    delayed: int = 0
    paused: int = 0
    prioritized: int = 0
    completed: int = 0
    failed: int = 0
    waiting_children: int = 0
    # Not in `waiting` (nor the backlog the HPA scales on): a worker more would not run them sooner.
    held: int = Field(default=0, description="ready jobs held back by their key's per-key limit")
    oldest_waiting_seconds: float = 0.0
    is_paused: bool = False

    @property
    def backlog(self) -> int:
        """waiting + active: does not drop to zero while jobs still run."""
        return self.waiting + self.active

    def as_dict(self) -> dict[str, Any]:
        return {**self.model_dump(), "backlog": self.backlog}


class DeadJob(BaseModel):
    """A dead-letter entry: everything needed to understand a job's failure and to run it again.

    ``payload_b64`` is the job's original bytes, so ``dlq requeue`` restores the job exactly without
    decoding it (the API and the dlq tools never unpickle). ``args``/``kwargs`` are for reading: the
    decoded values on JSON queues, ``repr`` strings on pickle queues, None when the payload was undecodable.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    job_id: str
    queue: str
    function: str | None = None
    args: Any = None
    kwargs: Any = None
    attempts: int
    error: str
    traceback: str | None = None
    enqueued_at: float | None = None
    failed_at: float
    priority: int | None = None
    payload_b64: str | None = None


class JobLogLine(BaseModel):
    """One line a task wrote to its job's log (``ctx["log"]`` or a ``logging`` record while it ran)."""

    model_config = ConfigDict(defer_build=True)

    at: float = Field(description="when the worker took the line, epoch seconds (the worker's clock)")
    attempt: int | None = Field(default=None, description="the try that wrote it (1-based)")
    level: str = Field(description="INFO, WARNING, ... (the logging level name), or TRUNCATED for the cap's mark")
    message: str


class JobLogPage(BaseModel):
    """What ``GET /v1/jobs/{job_id}/logs`` answers: a page of the job's log lines, oldest first."""

    model_config = ConfigDict(defer_build=True)

    job_id: str
    total: int = Field(description="lines stored for the job (the truncation mark included)")
    offset: int
    lines: list[JobLogLine]
    truncated: bool = Field(description="the job wrote more than its queue's logs.max_lines or max_bytes keep")
