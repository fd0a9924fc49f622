"""The HTTP API's shapes and its OpenAPI 3.1 description, built from the pydantic models.

``OPERATIONS`` is the one table of routes: ``arqscale.api.app`` registers exactly these (a handler per
``operation_id``) and ``build_document`` describes exactly these, so no route goes undocumented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from arqscale import __version__
from arqscale.core.groups import MAX_PAGE as MAX_GROUP_PAGE
from arqscale.core.groups import GroupPage
from arqscale.core.history import KEEP_SECONDS as HISTORY_SECONDS
from arqscale.core.history import History
from arqscale.core.job_listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, JobList, ListState
from arqscale.core.job_logs import MAX_PAGE as MAX_LOG_PAGE
from arqscale.core.job_search import MAX_RESULTS as MAX_SEARCH
from arqscale.core.job_search import STATES as SEARCH_STATES
from arqscale.core.job_search import JobSearch
from arqscale.core.live_workers import WorkerList
from arqscale.core.models import DeadJob, EnqueueResult, JobLogPage, JobRequest, JobState, JobStatus
from arqscale.core.schedule_spec import SCHEDULE_NAME_RE, ScheduleFields
from arqscale.core.schedules import ScheduleChange, ScheduleList, ScheduleView
from arqscale.core.spec import QUEUE_NAME_RE
from arqscale.core.webhook_store import MAX_PAGE as MAX_WEBHOOK_PAGE
from arqscale.core.webhook_store import DeadDelivery, DeadDeliveryList, DeadDeliveryPurge, DeadDeliveryRetry

MAX_BATCH_JOBS = 1000
# The dead-letter routes' bounds: the handlers enforce them, the document declares them (issue 10).
MAX_DEAD_OFFSET = 10**9
MAX_DEAD_LIMIT = 1000
MAX_PURGE_AGE = 100 * 365 * 86400


# ---- request and response bodies that exist only in the API ------------------------------------


class FieldError(BaseModel):
    field: str = Field(description="where the problem is, e.g. jobs.3.priority")
    message: str


class ApiError(BaseModel):
    """Every error answer: a stable code, a sentence for people, and the fields at fault."""

    error: str = Field(description="stable machine-readable code, e.g. unknown_queue")
    message: str
    details: list[FieldError] = Field(default_factory=list)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobRequest] = Field(min_length=1, max_length=MAX_BATCH_JOBS)


class BatchResponse(BaseModel):
    jobs: list[EnqueueResult]


class QueueView(BaseModel):
    """Counts of one queue, BullMQ's meaning: ``failed`` is the dead-letter store."""

    queue: str
    waiting: int
    active: int
    delayed: int
    paused: int
    prioritized: int
    completed: int
    failed: int
    waiting_children: int
    held: int = Field(default=0, description="ready jobs held back by their key's per-key limit (not in waiting)")
    backlog: int = Field(description="waiting + active")
    oldest_waiting_seconds: float
    is_paused: bool
    workers: int = Field(description="worker processes with a live heartbeat on this queue")


class QueueList(BaseModel):
    queues: list[QueueView]


class SessionView(BaseModel):
    """What the caller's token may do."""

    read_only: bool = Field(description="true with ARQSCALE_API_READ_TOKEN: every mutating route answers 403")


class PromoteResponse(BaseModel):
    queue: str
    job_id: str
    status: Literal["promoted"]


class CleanResponse(BaseModel):
    queue: str
    state: Literal["completed", "failed"]
    deleted: int = Field(description="jobs whose results (completed) or dead-letter entries (failed) were deleted")
    more: bool = Field(description="older jobs remain: call again (completed jobs go at most 1000 per call)")


class RedisInfo(BaseModel):
    """Redis at a glance (a few fields of INFO)."""

    used_memory_bytes: int
    maxmemory_bytes: int = Field(description="0: no limit")
    connected_clients: int
    commands_per_second: int = Field(description="Redis' instantaneous_ops_per_sec")
    version: str
    uptime_seconds: int


class PauseResponse(BaseModel):
    queue: str
    paused: bool
    changed: bool = Field(description="false when the queue already was in that state")


class DeadLetterList(BaseModel):
    queue: str
    total: int
    offset: int
    limit: int
    items: list[DeadJob]


class RequeueResponse(BaseModel):
    queue: str
    job_id: str
    status: JobState


class CancelResponse(BaseModel):
    queue: str
    job_id: str
    status: Literal["cancelled", "cancelling"] = Field(
        description="cancelled: it was waiting or delayed and will never run; cancelling: it is running and "
        "its worker stops it within a second (the job's state becomes cancelled)"
    )


class RequeueAllResponse(BaseModel):
    queue: str
    requeued: list[str]
    skipped: dict[str, str] = Field(description="job id -> why it was not requeued")


class PurgeResponse(BaseModel):
    queue: str
    purged: int


EventName = Literal[
    "waiting", "delayed", "active", "progress", "retrying", "completed", "failed", "dead", "cancelled", "requeued"
]


class EventView(BaseModel):
    """One job event (docs/events.md). Fields that do not apply to the event are left out."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    id: str = Field(description="the stream id (<ms>-<seq>): pass it as after= or Last-Event-ID to resume after it")
    queue: str
    event: EventName
    job: str = Field(description="the job id")
    at: int = Field(description="when it happened, Redis' clock, ms since the epoch")
    job_try: int | None = Field(default=None, alias="try", description="the try number (1-based)")
    worker: str | None = Field(default=None, description="the worker holding the job")
    func: str | None = Field(default=None, description="the task's name (waiting, delayed)")
    delay_ms: int | None = Field(default=None, description="ms from `at` until the job is ready (delayed, retrying)")
    enqueued: int | None = Field(
        default=None, description="the job's enqueue time, ms (waiting written by the pickup for a plain arq job)"
    )
    error: str | None = Field(default=None, description="the error, capped (failed, dead)")
    duration_ms: int | None = Field(default=None, description="how long the try ran (completed, failed, cancelled)")
    reason: str | None = Field(
        default=None, description="requeued: stalled, drain or dead_letter; cancelled: the cancel's reason"
    )
    progress: float | None = Field(default=None, description="percent (progress)")
    message: str | None = Field(default=None, description="the progress message (progress)")


class EventPage(BaseModel):
    """Kept events after `after`, oldest first (the JSON form; send Accept: text/event-stream to follow them)."""

    queue: str
    events: list[EventView]
    last_id: str = Field(description="pass as after= for the next page (the same `after` when there was nothing)")
    gap: bool = Field(description="events after `after` were trimmed before this read (the stream is capped)")


class RedisHealth(BaseModel):
    connected: bool
    latency_ms: float | None = None
    error: str | None = None


class Health(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    redis: RedisHealth
    problems: list[str] = Field(default_factory=list)
    queues: list[QueueView] = Field(default_factory=list)
    timestamp: float


class Probe(BaseModel):
    status: Literal["ok", "unavailable"]


# ---- the route table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["path", "query", "header"]
    schema: dict[str, Any]
    description: str = ""


QUEUE = Param("queue", "path", {"type": "string", "pattern": QUEUE_NAME_RE.pattern}, "queue name")
# Any text plain arq accepts is an id (issue 10): no pattern here, only what a path segment needs.
JOB_ID_FORM = (
    "the job id as one path segment: its UTF-8 bytes percent-encoded (encodeURIComponent, "
    "urllib.parse.quote(id, safe='')), so any id works, including ones with / ? # % spaces, newlines or "
    "non-ASCII text; a segment that does not decode to UTF-8 is a 422. URL clients that follow the URL "
    "standard (browsers) drop the segments . and .. even percent-encoded; send those two ids with a client "
    "that keeps the path as given (curl --path-as-is) or use the CLI"
)
JOB_ID = Param("job_id", "path", {"type": "string", "minLength": 1}, JOB_ID_FORM)
DELIVERY = Param(
    "delivery_id", "path", {"type": "string", "minLength": 1}, "the webhook's id (its webhook-id header), as listed"
)
SCHEDULE = Param("name", "path", {"type": "string", "pattern": SCHEDULE_NAME_RE.pattern}, "schedule name")
STREAM_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"
MAX_EVENT_PAGE = 1000
_EVENT_PARAMS = (
    Param("after", "query", {"type": "string", "pattern": STREAM_ID_PATTERN},
          "a stream id: only events after it (0-0: every kept one); default: the queue's from now on when "
          "following, every kept one otherwise (a job's: every kept one)"),
    Param("Last-Event-ID", "header", {"type": "string", "pattern": STREAM_ID_PATTERN},
          "what an EventSource sends when it reconnects: resume after it (wins over after=)"),
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_EVENT_PAGE, "default": 100},
          "events per JSON page (not used when following)"),
)  # fmt: skip
EVENTS_STREAM = (
    "With Accept: text/event-stream, Server-Sent Events that follow the stream until the client leaves: each "
    "event has `id:` (its stream id), `event:` (its name) and `data:` (the JSON of EventView); a comment "
    "line every 15 s keeps idle connections open; an `event: gap` (data: {after}) says events after the "
    "resume point were trimmed. Otherwise one JSON page of kept events"
)


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    summary: str
    responses: dict[int, type[BaseModel]]
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    open: bool = False  # served without the bearer token (probes and this document)
    stream: bool = False  # 200 is also served as text/event-stream (Server-Sent Events) on Accept


_ERR_ANY = {400: ApiError, 401: ApiError, 404: ApiError, 413: ApiError, 422: ApiError, 503: ApiError}
_ERR_READ = {401: ApiError, 404: ApiError, 422: ApiError, 503: ApiError}

OPERATIONS: tuple[Operation, ...] = (
    Operation("health", "GET", "/healthz", "Health: healthy, degraded or unhealthy, and whether Redis answers",
              {200: Health, 503: Health}, open=True),
    Operation("livez", "GET", "/livez", "Liveness: the process serves requests", {200: Probe}, open=True),
    Operation("readyz", "GET", "/readyz", "Readiness: Redis answers", {200: Probe, 503: Probe}, open=True),
    Operation("enqueue", "POST", "/v1/queues/{queue}/jobs", "Enqueue one job (202 at once; job_id makes it idempotent)",
              {202: EnqueueResult, **_ERR_ANY}, body=JobRequest, params=(QUEUE,)),
    Operation("enqueue_batch", "POST", "/v1/queues/{queue}/jobs:batch",
              f"Enqueue up to {MAX_BATCH_JOBS} jobs in one round trip; all are validated before any is written",
              {202: BatchResponse, **_ERR_ANY}, body=BatchRequest, params=(QUEUE,)),
    Operation("list_jobs", "GET", "/v1/queues/{queue}/jobs",
              "A page of the queue's jobs in one state, with the state's total (waiting: in the order workers "
              "take them; delayed: by ready time; active: live leases; completed and failed: newest first)",
              {200: JobList, **_ERR_READ},
              params=(QUEUE,
                      Param("state", "query", {"type": "string", "enum": [s.value for s in ListState],
                                               "default": ListState.WAITING.value},
                            "which jobs: BullMQ's state names, as in the queue counts"),
                      Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}),
                      Param("limit", "query",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                            f"jobs per page; more than {MAX_LIMIT} is a 422"))),
    Operation("job_status", "GET", "/v1/jobs/{job_id}", "A job's state, progress, result or error, attempts, times",
              {200: JobStatus, 404: JobStatus, 401: ApiError, 422: ApiError, 503: ApiError}, params=(JOB_ID,)),
    Operation("cancel_job", "POST", "/v1/jobs/{job_id}/cancel",
              "Cancel a job: a waiting or delayed one never runs; a running one is stopped by its worker and "
              "ends cancelled (not retried); 409 when it already finished",
              {202: CancelResponse, 404: ApiError, 409: ApiError, 401: ApiError, 422: ApiError, 503: ApiError},
              params=(JOB_ID,)),
    Operation("job_logs", "GET", "/v1/jobs/{job_id}/logs",
              "The lines the job's tasks wrote (ctx['log'] and logging while they ran), oldest first, a page at a "
              "time; kept as long as the job's result; 404 when neither the job nor a log is known",
              {200: JobLogPage, **_ERR_READ},
              params=(JOB_ID,
                      Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}),
                      Param("limit", "query",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LOG_PAGE, "default": 1000}))),
    Operation("list_queues", "GET", "/v1/queues", "Counts per state of every queue",
              {200: QueueList, 401: ApiError, 503: ApiError}),
    Operation("get_queue", "GET", "/v1/queues/{queue}", "Counts per state of one queue", {200: QueueView, **_ERR_READ},
              params=(QUEUE,)),
    Operation("pause_queue", "POST", "/v1/queues/{queue}/pause", "Pause: workers take no jobs; enqueueing still works",
              {200: PauseResponse, **_ERR_READ}, params=(QUEUE,)),
    Operation("resume_queue", "POST", "/v1/queues/{queue}/resume", "Resume a paused queue and wake its workers",
              {200: PauseResponse, **_ERR_READ}, params=(QUEUE,)),
    Operation("list_groups", "GET", "/v1/queues/{queue}/groups",
              "Keys of the queue's per-key limits with running or held jobs, in byte order, a page at a time",
              {200: GroupPage, **_ERR_READ},
              params=(QUEUE, Param("after", "query", {"type": "string"}, "the next_after of the previous page"),
                      Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_GROUP_PAGE,
                                               "default": 100}))),
    Operation("list_dead_letters", "GET", "/v1/queues/{queue}/dead-letters", "Dead-letter entries, newest first",
              {200: DeadLetterList, **_ERR_READ},
              params=(QUEUE,
                      Param("offset", "query",
                            {"type": "integer", "minimum": 0, "maximum": MAX_DEAD_OFFSET, "default": 0}),
                      Param("limit", "query",
                            {"type": "integer", "minimum": 1, "maximum": MAX_DEAD_LIMIT, "default": 50}))),
    Operation("purge_dead_letters", "DELETE", "/v1/queues/{queue}/dead-letters",
              "Delete the entries that failed at least older_than_seconds ago (by Redis' clock), or every entry "
              "with all=true. Give exactly one of the two (all=false counts as not given): neither, or both, is a "
              "422, so a bare DELETE never empties the store by mistake",
              {200: PurgeResponse, **_ERR_READ},
              params=(QUEUE,
                      Param("older_than_seconds", "query", {"type": "number", "minimum": 0, "maximum": MAX_PURGE_AGE},
                            "delete entries older than this; not together with all=true"),
                      Param("all", "query", {"type": "boolean"},
                            "true deletes every entry; not together with older_than_seconds"))),
    Operation("requeue_dead_letters", "POST", "/v1/queues/{queue}/dead-letters/requeue",
              "Requeue every entry (same ids, original payloads, tries reset)",
              {200: RequeueAllResponse, **_ERR_READ}, params=(QUEUE,)),
    Operation("get_dead_letter", "GET", "/v1/queues/{queue}/dead-letters/{job_id}", "One dead-letter entry",
              {200: DeadJob, **_ERR_READ}, params=(QUEUE, JOB_ID)),
    Operation("purge_dead_letter", "DELETE", "/v1/queues/{queue}/dead-letters/{job_id}", "Delete one entry",
              {200: PurgeResponse, **_ERR_READ}, params=(QUEUE, JOB_ID)),
    Operation("requeue_dead_letter", "POST", "/v1/queues/{queue}/dead-letters/{job_id}/requeue",
              "Requeue one entry under the same id; 409 when a live job holds that id",
              {202: RequeueResponse, 409: ApiError, **_ERR_READ}, params=(QUEUE, JOB_ID)),
    Operation("list_schedules", "GET", "/v1/queues/{queue}/schedules",
              "The queue's schedules (declared in the queues file or created at run time), each with its next run "
              "time and last job", {200: ScheduleList, **_ERR_READ}, params=(QUEUE,)),
    Operation("get_schedule", "GET", "/v1/queues/{queue}/schedules/{name}", "One schedule",
              {200: ScheduleView, **_ERR_READ}, params=(QUEUE, SCHEDULE)),
    Operation("put_schedule", "PUT", "/v1/queues/{queue}/schedules/{name}",
              "Create (201) or replace (200) a runtime schedule; a changed one starts at its first tick after now; "
              "409 for one the queues file declares",
              {200: ScheduleView, 201: ScheduleView, 409: ApiError, **_ERR_ANY}, body=ScheduleFields,
              params=(QUEUE, SCHEDULE)),
    Operation("delete_schedule", "DELETE", "/v1/queues/{queue}/schedules/{name}",
              "Remove a runtime schedule (jobs it enqueued stay); 409 for one the queues file declares",
              {200: ScheduleChange, 409: ApiError, **_ERR_READ}, params=(QUEUE, SCHEDULE)),
    Operation("pause_schedule", "POST", "/v1/queues/{queue}/schedules/{name}/pause",
              "Stop a schedule's ticks (declared ones too; kept across worker restarts)",
              {200: ScheduleChange, **_ERR_READ}, params=(QUEUE, SCHEDULE)),
    Operation("resume_schedule", "POST", "/v1/queues/{queue}/schedules/{name}/resume",
              "Tick again from the first tick after now (ticks passed while paused do not run)",
              {200: ScheduleChange, 409: ApiError, **_ERR_READ}, params=(QUEUE, SCHEDULE)),
    Operation("queue_events", "GET", "/v1/queues/{queue}/events",
              "The queue's job events, oldest first. " + EVENTS_STREAM,
              {200: EventPage, **_ERR_READ}, params=(QUEUE, *_EVENT_PARAMS), stream=True),
    Operation("job_events", "GET", "/v1/jobs/{job_id}/events",
              "One job's events (found in its queue's stream; queue= names it for a job not enqueued yet). "
              + EVENTS_STREAM,
              {200: EventPage, **_ERR_READ},
              params=(JOB_ID, Param("queue", "query", {"type": "string", "pattern": QUEUE_NAME_RE.pattern},
                                    "the job's queue, when it cannot be looked up"), *_EVENT_PARAMS),
              stream=True),
    Operation("list_dead_webhooks", "GET", "/v1/queues/{queue}/webhooks/dead",
              "Undeliverable webhooks (attempts used up, or the address refused), newest first",
              {200: DeadDeliveryList, **_ERR_READ},
              params=(QUEUE,
                      Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}),
                      Param("limit", "query",
                            {"type": "integer", "minimum": 1, "maximum": MAX_WEBHOOK_PAGE, "default": 50}))),
    Operation("purge_dead_webhooks", "DELETE", "/v1/queues/{queue}/webhooks/dead",
              "Delete every undeliverable webhook of the queue; all=true is required",
              {200: DeadDeliveryPurge, **_ERR_READ},
              params=(QUEUE, Param("all", "query", {"type": "boolean"}, "must be true"))),
    Operation("retry_dead_webhooks", "POST", "/v1/queues/{queue}/webhooks/dead/retry",
              "Send every undeliverable webhook again (same ids and bodies, attempts from 0)",
              {202: DeadDeliveryRetry, **_ERR_READ}, params=(QUEUE,)),
    Operation("get_dead_webhook", "GET", "/v1/queues/{queue}/webhooks/dead/{delivery_id}",
              "One undeliverable webhook", {200: DeadDelivery, **_ERR_READ}, params=(QUEUE, DELIVERY)),
    Operation("purge_dead_webhook", "DELETE", "/v1/queues/{queue}/webhooks/dead/{delivery_id}",
              "Delete one undeliverable webhook", {200: DeadDeliveryPurge, **_ERR_READ}, params=(QUEUE, DELIVERY)),
    Operation("retry_dead_webhook", "POST", "/v1/queues/{queue}/webhooks/dead/{delivery_id}/retry",
              "Send one undeliverable webhook again (same id and body, attempts from 0)",
              {202: DeadDeliveryRetry, **_ERR_READ}, params=(QUEUE, DELIVERY)),
    Operation("queue_history", "GET", "/v1/queues/{queue}/history",
              "The queue's samples (one per 10 s window, kept an hour): counts, oldest waiting age, live "
              "workers, completed and failed per second; oldest first",
              {200: History, **_ERR_READ},
              params=(QUEUE, Param("since_seconds", "query",
                                   {"type": "number", "minimum": 1, "maximum": HISTORY_SECONDS,
                                    "default": HISTORY_SECONDS}, "how far back"))),
    Operation("redis_info", "GET", "/v1/redis", "Redis at a glance: memory, clients, commands per second",
              {200: RedisInfo, 401: ApiError, 503: ApiError}),
    Operation("search_jobs", "GET", "/v1/queues/{queue}/search",
              "Find jobs by id prefix, function and state (each index scanned for at most 10,000 entries: "
              "complete says whether all were)",
              {200: JobSearch, **_ERR_READ},
              params=(QUEUE,
                      Param("prefix", "query", {"type": "string"}, "the id starts with this"),
                      Param("function", "query", {"type": "string"}, "the task's name"),
                      Param("state", "query", {"type": "string", "enum": list(SEARCH_STATES)}, "BullMQ's state"),
                      Param("limit", "query",
                            {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH, "default": 50}))),
    Operation("queue_workers", "GET", "/v1/queues/{queue}/workers",
              "The queue's live workers: id, host, pod, pid, jobs running, last heartbeat",
              {200: WorkerList, **_ERR_READ}, params=(QUEUE,)),
    Operation("session", "GET", "/v1/session", "What this token may do (read-only or not)",
              {200: SessionView, 401: ApiError}),
    Operation("promote_job", "POST", "/v1/jobs/{job_id}/promote",
              "Make a delayed job ready now, in its priority band (409 when it is not delayed)",
              {202: PromoteResponse, 409: ApiError, 403: ApiError, **_ERR_READ}, params=(JOB_ID,)),
    Operation("clean_queue", "POST", "/v1/queues/{queue}/clean",
              "Delete completed jobs' results, or failed jobs' dead-letter entries, older than an age "
              "(completed: oldest first, at most limit per call; repeat while more is true)",
              {200: CleanResponse, 403: ApiError, **_ERR_READ},
              params=(QUEUE,
                      Param("state", "query", {"type": "string", "enum": ["completed", "failed"]}, "which jobs"),
                      Param("older_than_seconds", "query",
                            {"type": "number", "minimum": 0, "maximum": MAX_PURGE_AGE}, "ended more than this ago"),
                      Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}))),
    Operation("openapi", "GET", "/openapi.json", "This document", {}, open=True),
)  # fmt: skip

_DESCRIPTIONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Invalid JSON",
    401: "Missing or wrong bearer token",
    403: "The read-only token may not change anything",
    404: "Unknown queue, job or entry (for a job: its status, state not_found)",
    409: "Conflict",
    413: "Body too large",
    422: "Validation failed; details name the fields",
    503: "Redis does not answer, or refused (out of memory, read-only, loading)",
}


def _schemas() -> dict[str, Any]:
    models: set[tuple[type[BaseModel], Literal["validation", "serialization"]]] = set()
    for op in OPERATIONS:
        if op.body is not None:
            models.add((op.body, "validation"))
        for model in op.responses.values():
            models.add((model, "serialization"))
    _, top = models_json_schema(
        sorted(models, key=lambda m: (m[0].__name__, m[1])), ref_template="#/components/schemas/{model}"
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(op: Operation, max_body_bytes: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.params:
        doc["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.where == "path", "schema": p.schema}
            | ({"description": p.description} if p.description else {})
            for p in op.params
        ]
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "description": f"JSON, at most {max_body_bytes} bytes",
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    responses: dict[str, Any] = {}
    for code, model in sorted(op.responses.items()):
        responses[str(code)] = {
            "description": _DESCRIPTIONS.get(code, "OK"),
            "content": {"application/json": {"schema": _ref(model)}},
        }
        if op.stream and code == 200:
            responses["200"]["content"]["text/event-stream"] = {
                "schema": {"type": "string", "description": "Server-Sent Events; each data: line is an EventView"}
            }
    if not responses:
        responses["200"] = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    doc["responses"] = responses
    doc["security"] = [] if op.open else [{"bearerAuth": []}]
    return doc


def build_document(max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route in ``OPERATIONS``."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, max_body_bytes)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "arqscale API",
            "version": __version__,
            "description": "Enqueue arq jobs, read their status, list and watch queues, manage dead letters and "
            "schedules. When "
            "ARQSCALE_API_TOKEN is set, /v1 routes need `Authorization: Bearer <token>`.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
