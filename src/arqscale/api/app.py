"""``arqscale api``: enqueue jobs, read their status, watch queues and manage dead letters over HTTP.

Every answer is JSON. Bad input never reaches a 500: each problem maps to a status and an
``ApiError`` naming it (unknown queue 404, unknown function 422, validation 422 with the fields,
invalid JSON 400, body too large 413, missing or wrong bearer token 401, Redis away 503). The
routes are the ``OPERATIONS`` table of ``arqscale.api.openapi``, which also describes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import math
import re
import signal
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arqscale.api.dashboard import dashboard_middleware
from arqscale.api.openapi import (
    MAX_DEAD_LIMIT,
    MAX_DEAD_OFFSET,
    MAX_PURGE_AGE,
    OPERATIONS,
    ApiError,
    BatchRequest,
    BatchResponse,
    CancelResponse,
    DeadLetterList,
    FieldError,
    Health,
    PauseResponse,
    Probe,
    PurgeResponse,
    QueueList,
    QueueView,
    RedisHealth,
    RequeueAllResponse,
    RequeueResponse,
    build_document,
)
from arqscale.core import job_logs, queue_control, scores, tracing
from arqscale.core.cancellation import CancelOutcome
from arqscale.core.config import Config
from arqscale.core.connection import create_redis, leaked_connection_error
from arqscale.core.counts import CountsReader
from arqscale.core.dead_letters import DeadLetters, RequeueOutcome
from arqscale.core.groups import MAX_PAGE as MAX_GROUP_PAGE
from arqscale.core.groups import GroupReader
from arqscale.core.job_listing import DEFAULT_LIMIT as DEFAULT_JOB_PAGE
from arqscale.core.job_listing import MAX_LIMIT, MAX_OFFSET, JobLister, ListState
from arqscale.core.job_status import JobStatusReader
from arqscale.core.live_workers import live_workers
from arqscale.core.models import EnqueueResult, JobRequest, JobState, QueueCounts
from arqscale.core.producer import CallbackError, GroupError, NotReplicated, Producer
from arqscale.core.safe_data import UnsafeArguments, model_json
from arqscale.core.spec import QueueSpec

log = logging.getLogger("arqscale.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PING_TIMEOUT = 2.0
REDIS_TIMEOUT = 1.5  # seconds a data route waits for Redis before answering 503


class Problem(Exception):
    """An error answer: HTTP status, stable code, message, and the fields at fault."""

    def __init__(self, status: int, code: str, message: str, details: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


@dataclass
class State:
    """What every handler needs, built once per application."""

    specs: dict[str, QueueSpec]
    redis: Redis
    producer: Producer
    counts: CountsReader
    statuses: JobStatusReader
    lister: JobLister
    max_body_bytes: int
    token: bytes | None
    document: dict[str, Any]
    read_token: bytes | None = None  # may use GET routes only
    traced: bool = False  # OpenTelemetry on: an enqueue joins the caller's trace (its traceparent header)


STATE = web.AppKey("arqscale_state", State)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    # model_json: stored data a hostile producer wrote (a lone surrogate, deep nesting) renders, never a 500.
    return web.json_response(text=model_json(model), status=status)


def _problem(problem: Problem, headers: Mapping[str, str] | None = None) -> web.Response:
    body = ApiError(error=problem.code, message=problem.message, details=problem.details)
    return web.json_response(text=body.model_dump_json(), status=problem.status, headers=headers)


# ---- middlewares --------------------------------------------------------------------------------

_REDIS_REFUSALS = re.compile(r"\b(OOM|READONLY|LOADING|BUSY|MASTERDOWN|NOREPLICAS|MISCONF)\b")
_HTTP_CODES = {403: "read_only", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large", 400: "bad_request"}


# Documented paths, literal segments first: .../dead-letters/requeue before .../dead-letters/{job_id}.
_TEMPLATES = sorted({op.path for op in OPERATIONS}, key=lambda path: path.count("{"))
_METHODS = {path: sorted({op.method for op in OPERATIONS if op.path == path}) for path in _TEMPLATES}


def _allowed(request: web.Request, aiohttp_allow: str) -> str:
    """The ``Allow`` of a 405: the methods the document gives the most specific path that matches.

    aiohttp answers with every method of every route the path matches, and ``{job_id}`` matches the
    literal ``requeue`` too, so POST .../dead-letters/requeue would advertise GET and DELETE as well.
    """
    segments = request.rel_url.raw_path.split("/")
    for template in _TEMPLATES:
        parts = template.split("/")
        if len(parts) != len(segments):
            continue
        if all(part.startswith("{") or part == seg for part, seg in zip(parts, segments, strict=True)):
            return ",".join(_METHODS[template])
    return aiohttp_allow


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return _problem(problem)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 413:
            message = f"request body is larger than the limit of {request.app[STATE].max_body_bytes} bytes"
        elif exc.status == 404:
            message = f"no route {request.method} {request.path}"
        headers = {"Allow": _allowed(request, exc.headers["Allow"])} if "Allow" in exc.headers else None
        return _problem(Problem(exc.status, code, message), headers)
    except NotReplicated as exc:
        # The primary holds the jobs; the replicas asked for did not confirm them in time. Retrying with
        # the same job id is safe (no second copy), so this is 503 with the ids, not 500.
        log.warning("durable enqueue not confirmed during %s %s: %s", request.method, request.path, exc)
        return _problem(Problem(503, "not_replicated", str(exc)))
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # redis-py's messages name host and port only; the password is never in them.
        log.warning("Redis unavailable during %s %s: %s", request.method, request.path, exc)
        return _problem(Problem(503, "redis_unavailable", "Redis does not answer; retry later"))
    except RedisError as exc:
        # Redis answered with an error: out of memory, a read-only replica, still loading its data.
        # The request was fine and may succeed later, so this is 503, not 500.
        log.warning("Redis refused %s %s: %s", request.method, request.path, exc)
        known = _REDIS_REFUSALS.search(str(exc))
        reason = known.group(1) if known else type(exc).__name__
        return _problem(Problem(503, "redis_error", f"Redis refused the request ({reason}); retry later"))
    except RedisClusterException as exc:
        # Cluster errors outside RedisError: a slot with no primary mid-failover (SlotNotCoveredError), no
        # seed node answering. An outage, not a fault of the request.
        log.warning("Redis Cluster unavailable during %s %s: %s", request.method, request.path, exc)
        return _problem(Problem(503, "redis_unavailable", "Redis does not answer; retry later"))
    except (AttributeError, TypeError) as exc:
        if not leaked_connection_error(exc):
            log.exception("unexpected error during %s %s", request.method, request.path)
            return _problem(Problem(500, "internal_error", "unexpected server error; see the API's log"))
        log.warning("Redis connection closed under %s %s: %r", request.method, request.path, exc)
        return _problem(Problem(503, "redis_unavailable", "Redis does not answer; retry later"))
    except Exception:
        log.exception("unexpected error during %s %s", request.method, request.path)
        return _problem(Problem(500, "internal_error", "unexpected server error; see the API's log"))


_OPEN_PATHS = frozenset(op.path for op in OPERATIONS if op.open)


def _bearer(request: web.Request) -> bytes | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip().encode() if scheme.lower() == "bearer" else None


def _authorized(request: web.Request, state: State) -> bool:
    """No token configured, or the request carries it (or the read-only token) as a bearer token."""
    if state.token is None and state.read_token is None:
        return True
    given = _bearer(request)
    if given is None:
        return False
    # compare_digest: the time taken does not tell how much of a guess was right.
    if state.token is not None and hmac.compare_digest(given, state.token):
        return True
    return state.read_token is not None and hmac.compare_digest(given, state.read_token)


def read_only(request: web.Request, state: State) -> bool:
    """The request carries the read-only token (and not the full one, should both be the same)."""
    given = _bearer(request)
    if state.read_token is None or given is None:
        return False
    if state.token is not None and hmac.compare_digest(given, state.token):
        return False
    return hmac.compare_digest(given, state.read_token)


_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    if request.path not in _OPEN_PATHS and not _authorized(request, state):
        problem = Problem(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)")
        return _problem(problem, {"WWW-Authenticate": 'Bearer realm="arqscale"'})
    if request.method not in _READ_METHODS and request.path not in _OPEN_PATHS and read_only(request, state):
        # Enforced here, for every route that changes anything, whatever the page shows.
        raise Problem(403, "read_only", "this token may only read (ARQSCALE_API_READ_TOKEN); ask for the full token")
    length = request.content_length
    if length is not None and length > state.max_body_bytes:
        # Refuse before reading a byte; chunked bodies are capped by client_max_size while read.
        raise Problem(413, "body_too_large", f"request body is larger than the limit of {state.max_body_bytes} bytes")
    return await handler(request)


# ---- request parsing ----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every request: json.loads with an argument builds a new JSONDecoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise Problem(400, "invalid_json", "request body is empty; send a JSON object")
    try:
        # As json.loads(bytes): UTF-8, -16 or -32 told by the first bytes.
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise Problem(400, "invalid_json", f"request body is not valid JSON: {reason}") from None


def _validation_problem(exc: ValidationError, prefix: str = "") -> Problem:
    details = [
        FieldError(field=prefix + (".".join(str(p) for p in err["loc"]) or "(body)"), message=err["msg"])
        for err in exc.errors(include_url=False, include_input=False)
    ]
    fields = ", ".join(d.field for d in details)
    return Problem(422, "validation_error", f"invalid request: {fields}", details)


def _spec(request: web.Request) -> QueueSpec:
    state = request.app[STATE]
    name = request.match_info["queue"]
    spec = state.specs.get(name)
    if spec is None:
        known = ", ".join(sorted(state.specs)) or "(none)"
        raise Problem(404, "unknown_queue", f"unknown queue {name!r}; known queues: {known}")
    return spec


def _job_id(request: web.Request) -> str:
    """The id in the path, percent-decoded from the raw segment: any id plain arq accepts (issue 10).

    A plain arq producer may use any text as an id: spaces, newlines, ``/``, ``%``, markup, non-ASCII.
    Clients send it as one percent-encoded segment (``encodeURIComponent``, ``quote(id, safe="")``).
    The raw segment is decoded here, strictly as UTF-8, rather than trusting ``match_info``: aiohttp
    leaves a ``%FF`` that is not UTF-8 as the literal text ``%FF``, which would silently name another id.
    """
    canonical = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
    index = canonical.split("/").index("{job_id}")
    segment = request.rel_url.raw_path.split("/")[index]
    try:
        job_id = urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError:
        job_id = ""
    if not job_id:
        raise Problem(
            422,
            "validation_error",
            "invalid job id: not percent-encoded UTF-8 text",
            [FieldError(field="job_id", message="one path segment: the id's UTF-8 bytes, percent-encoded")],
        )
    return job_id


def _query_number(request: web.Request, name: str, default: float | None, low: float, high: float) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (low <= value <= high):  # also false for NaN
        raise Problem(
            422,
            "validation_error",
            f"invalid query parameter {name}",
            [FieldError(field=name, message=f"expected a number from {low:g} to {high:g}")],
        )
    return value


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)  # not str.isdigit: it accepts "²", which int() refuses
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise Problem(
            422,
            "validation_error",
            f"invalid query parameter {name}: expected an integer from {low} to {high}",
            [FieldError(field=name, message=f"expected an integer from {low} to {high}")],
        )
    return value


def _check_jobs(spec: QueueSpec, jobs: list[JobRequest], prefix: str) -> None:
    """Unknown functions and out-of-range priorities, each named by field, before anything is written."""
    for i, job in enumerate(jobs):
        where = f"{prefix}{i}." if prefix else ""
        if job.function not in spec.function_names:
            raise Problem(
                422,
                "unknown_function",
                f"queue {spec.name!r} has no function {job.function!r}; it runs: "
                + ", ".join(sorted(spec.function_names)),
                [FieldError(field=where + "function", message="unknown function")],
            )
        try:
            scores.check_priority(job.priority, spec)
        except ValueError as exc:
            raise Problem(
                422, "validation_error", str(exc), [FieldError(field=where + "priority", message=str(exc))]
            ) from None


async def _enqueue(
    state: State, spec: QueueSpec, jobs: list[JobRequest], headers: Mapping[str, str]
) -> list[EnqueueResult]:
    try:
        if state.traced:
            with tracing.continued(headers):
                results = await state.producer.enqueue_many(spec.name, jobs)
        else:
            results = await state.producer.enqueue_many(spec.name, jobs)
    except ValueError as exc:  # arguments the queue's serializer cannot encode, or too deep, or too large
        field = exc.field if isinstance(exc, UnsafeArguments) else "args"
        if isinstance(exc, GroupError | CallbackError):
            field = "group" if isinstance(exc, GroupError) else "callback_url"
        raise Problem(422, "invalid_arguments", str(exc), [FieldError(field=field, message=str(exc))]) from None
    return await existing_states(state.statuses, results)


async def existing_states(reader: JobStatusReader, results: list[EnqueueResult]) -> list[EnqueueResult]:
    """For ids that already existed, the state of that job (it may be running or done), not a guess."""
    again = [r for r in results if not r.created]
    if again:
        for result, status in zip(again, await reader.read_many([r.job_id for r in again]), strict=True):
            result.status = status.state
    return results


# ---- handlers -------------------------------------------------------------------------------------


async def enqueue(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    data = await _body(request)
    try:
        job = JobRequest.model_validate(data)
    except ValidationError as exc:
        raise _validation_problem(exc) from None
    _check_jobs(spec, [job], "")
    [result] = await _enqueue(request.app[STATE], spec, [job], request.headers)
    return _json(result, 202)


async def enqueue_batch(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    data = await _body(request)
    try:
        batch = BatchRequest.model_validate(data)
    except ValidationError as exc:
        raise _validation_problem(exc) from None
    _check_jobs(spec, batch.jobs, "jobs.")
    results = await _enqueue(request.app[STATE], spec, batch.jobs, request.headers)
    return _json(BatchResponse(jobs=results), 202)


async def job_status(request: web.Request) -> web.StreamResponse:
    status = await request.app[STATE].statuses.read(_job_id(request))
    return _json(status, 404 if status.state is JobState.NOT_FOUND else 200)


async def job_log(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    job_id = _job_id(request)
    offset = _query_int(request, "offset", 0, 0, 10**9)
    limit = _query_int(request, "limit", 1000, 1, job_logs.MAX_PAGE)
    key = await job_logs.log_key(state.redis, state.specs, job_id)
    if key is None:
        raise Problem(404, "not_found", f"no job {job_id!r}")
    page = await job_logs.read(state.redis, job_id, offset, limit, key=key)
    if page.total == 0 and (await state.statuses.read(job_id)).state is JobState.NOT_FOUND:
        raise Problem(404, "not_found", f"no job {job_id!r}")
    return _json(page)


async def cancel_job(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    job_id = _job_id(request)
    status = await state.statuses.read(job_id)
    if status.queue is None or status.queue not in state.specs:
        raise Problem(404, "not_found", f"no job {job_id!r}")
    outcome = await state.producer.cancel(job_id, status.queue)
    if outcome is CancelOutcome.NOT_FOUND:
        raise Problem(404, "not_found", f"no job {job_id!r}")
    if outcome is CancelOutcome.FINISHED:
        raise Problem(409, "finished", f"job {job_id!r} already finished; nothing to cancel")
    said = "cancelled" if outcome is CancelOutcome.CANCELLED else "cancelling"
    return _json(CancelResponse(queue=status.queue, job_id=job_id, status=said), 202)


_LIST_STATES = ", ".join(s.value for s in ListState)


async def list_jobs(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    raw_state = request.query.get("state", ListState.WAITING.value)
    try:
        state = ListState(raw_state)
    except ValueError:
        raise Problem(
            422,
            "validation_error",
            f"invalid query parameter state: {raw_state!r}; use one of {_LIST_STATES}",
            [FieldError(field="state", message=f"one of {_LIST_STATES}")],
        ) from None
    offset = _query_int(request, "offset", 0, 0, MAX_OFFSET)
    limit = _query_int(request, "limit", DEFAULT_JOB_PAGE, 1, MAX_LIMIT)
    return _json(await request.app[STATE].lister.page(spec, state, offset, limit))


def _view(counts: QueueCounts, workers: Mapping[str, int]) -> QueueView:
    return QueueView.model_validate({**counts.as_dict(), "workers": workers.get(counts.queue, 0)})


async def list_queues(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    counts = await state.counts.read(state.specs)
    workers = await live_workers(state.redis, state.specs)
    return _json(QueueList(queues=[_view(c, workers) for c in counts.values()]))


async def get_queue(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    state = request.app[STATE]
    counts = await state.counts.read({spec.name: spec})
    workers = await live_workers(state.redis, {spec.name: spec})
    return _json(_view(counts[spec.name], workers))


async def pause_queue(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    changed = await queue_control.pause(request.app[STATE].redis, spec)
    return _json(PauseResponse(queue=spec.name, paused=True, changed=changed))


async def resume_queue(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    changed = await queue_control.resume(request.app[STATE].redis, spec)
    return _json(PauseResponse(queue=spec.name, paused=False, changed=changed))


async def list_groups(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    limit = _query_int(request, "limit", 100, 1, MAX_GROUP_PAGE)
    page = await GroupReader(request.app[STATE].redis).page(spec, request.query.get("after"), limit)
    return _json(page)


def _store(request: web.Request) -> DeadLetters:
    return DeadLetters(request.app[STATE].redis, _spec(request))


async def list_dead_letters(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    offset = _query_int(request, "offset", 0, 0, MAX_DEAD_OFFSET)
    limit = _query_int(request, "limit", 50, 1, MAX_DEAD_LIMIT)
    page = await store.page(offset, limit)
    return _json(DeadLetterList(queue=page.queue, total=page.total, offset=offset, limit=limit, items=page.items))


async def get_dead_letter(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    job_id = _job_id(request)
    entry = await store.get(job_id)
    if entry is None:
        raise Problem(404, "not_found", f"no dead-letter entry {job_id!r} in queue {store.spec.name!r}")
    return _json(entry)


async def purge_dead_letters(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    older = _query_number(request, "older_than_seconds", None, 0, MAX_PURGE_AGE)
    everything = request.query.get("all", "false").lower()
    if everything not in ("true", "false"):
        raise Problem(
            422, "validation_error", "invalid query parameter all", [FieldError(field="all", message="true or false")]
        )
    if (older is None) == (everything == "false"):
        # Deleting every entry must be asked for by name: a bare DELETE is too easy to send by mistake.
        raise Problem(
            422,
            "validation_error",
            "give older_than_seconds, or all=true to delete every entry (not both)",
            [FieldError(field="all", message="required when older_than_seconds is not given")],
        )
    purged = await store.purge(older_than_seconds=older)
    return _json(PurgeResponse(queue=store.spec.name, purged=purged))


async def purge_dead_letter(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    job_id = _job_id(request)
    purged = await store.purge([job_id])
    if not purged:
        raise Problem(404, "not_found", f"no dead-letter entry {job_id!r} in queue {store.spec.name!r}")
    return _json(PurgeResponse(queue=store.spec.name, purged=purged))


_REQUEUE_PROBLEMS = {
    RequeueOutcome.NOT_FOUND: (404, "not_found", "no dead-letter entry {id!r} in queue {q!r}"),
    RequeueOutcome.CONFLICT: (409, "conflict", "a live job already holds the id {id!r} in queue {q!r}"),
    RequeueOutcome.NO_PAYLOAD: (409, "no_payload", "entry {id!r} kept no payload, so there is nothing to run"),
    RequeueOutcome.RACED: (409, "conflict", "entry {id!r} changed while being requeued; try again"),
}


async def requeue_dead_letter(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    job_id = _job_id(request)
    outcome = await store.requeue(job_id)
    if outcome is not RequeueOutcome.REQUEUED:
        status, code, template = _REQUEUE_PROBLEMS[outcome]
        raise Problem(status, code, template.format(id=job_id, q=store.spec.name))
    return _json(RequeueResponse(queue=store.spec.name, job_id=job_id, status=JobState.QUEUED), 202)


async def requeue_dead_letters(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    summary = await store.requeue_many()
    skipped = {job_id: str(outcome) for job_id, outcome in summary.skipped.items()}
    return _json(RequeueAllResponse(queue=store.spec.name, requeued=summary.requeued, skipped=skipped))


async def _ping(redis: Redis) -> RedisHealth:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(redis.ping(), PING_TIMEOUT)
    except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
        return RedisHealth(connected=False, error=type(exc).__name__)
    return RedisHealth(connected=True, latency_ms=round((time.perf_counter() - started) * 1000, 3))


async def health(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    redis_health = await _ping(state.redis)
    if not redis_health.connected:
        body = Health(status="unhealthy", redis=redis_health, problems=["Redis does not answer"], timestamp=time.time())
        return _json(body, 503)
    counts = await state.counts.read(state.specs)
    workers = await live_workers(state.redis, state.specs)
    problems = [
        f"queue {name}: {c.waiting} job(s) waiting and no live worker"
        for name, c in counts.items()
        if c.waiting and not workers.get(name)
    ]
    body = Health(status="degraded" if problems else "healthy", redis=redis_health, timestamp=time.time())
    if _authorized(request, state):
        body.problems = problems
        body.queues = [_view(c, workers) for c in counts.values()]
    elif problems:
        # Probes run without the token: say that something is wrong, not which queues exist.
        body.problems = [f"{len(problems)} queue(s) have waiting jobs and no live worker; ask with the token"]
    return _json(body)


async def livez(request: web.Request) -> web.StreamResponse:
    return _json(Probe(status="ok"))


async def readyz(request: web.Request) -> web.StreamResponse:
    redis_health = await _ping(request.app[STATE].redis)
    return _json(
        Probe(status="ok" if redis_health.connected else "unavailable"), 200 if redis_health.connected else 503
    )


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[STATE].document)


HANDLERS: dict[str, Handler] = {
    "health": health,
    "livez": livez,
    "readyz": readyz,
    "enqueue": enqueue,
    "enqueue_batch": enqueue_batch,
    "job_status": job_status,
    "cancel_job": cancel_job,
    "job_logs": job_log,
    "list_jobs": list_jobs,
    "list_queues": list_queues,
    "get_queue": get_queue,
    "pause_queue": pause_queue,
    "list_groups": list_groups,
    "resume_queue": resume_queue,
    "list_dead_letters": list_dead_letters,
    "get_dead_letter": get_dead_letter,
    "purge_dead_letters": purge_dead_letters,
    "purge_dead_letter": purge_dead_letter,
    "requeue_dead_letter": requeue_dead_letter,
    "requeue_dead_letters": requeue_dead_letters,
    "openapi": openapi,
}


def create_app(
    specs: Mapping[str, QueueSpec],
    redis: Redis,
    *,
    max_body_bytes: int,
    token: str | None = None,
    read_token: str | None = None,
    traced: bool = False,
    wait_replicas: int = 0,
    wait_timeout_ms: int = 1000,
    sample_history: bool = False,
) -> web.Application:
    """The API as an aiohttp application on an existing Redis client (the caller closes it).

    ``wait_replicas``: durable enqueue (``REDIS_WAIT_REPLICAS``); see ``Producer``."""
    arq_specs = {name: s for name, s in specs.items() if s.backend == "arq"}
    # The dashboard's static page comes before the token check: it holds nothing and asks for the token.
    middlewares = [errors_middleware, dashboard_middleware, auth_middleware]
    # client_max_size caps what request.read() accepts, chunked bodies included.
    app = web.Application(middlewares=middlewares, client_max_size=max_body_bytes)
    app[STATE] = State(
        specs=arq_specs,
        redis=redis,
        # batched: concurrent requests' enqueues share one Redis write and read (lua.CallBatcher).
        producer=Producer(redis, arq_specs, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms, batched=True),
        counts=CountsReader(redis),
        statuses=JobStatusReader(redis, arq_specs),
        lister=JobLister(redis),
        max_body_bytes=max_body_bytes,
        token=token.encode() if token else None,
        read_token=read_token.encode() if read_token else None,
        document=build_document(max_body_bytes),
        traced=traced,
    )
    # The schedule routes live in their own module, which imports this one: loaded here, once it is complete.
    from arqscale.api import dashboard_routes, event_routes
    from arqscale.api.dashboard_routes import HANDLERS as DASHBOARD_HANDLERS
    from arqscale.api.event_routes import HANDLERS as EVENT_HANDLERS
    from arqscale.api.schedule_routes import HANDLERS as SCHEDULE_HANDLERS
    from arqscale.api.webhook_routes import HANDLERS as WEBHOOK_HANDLERS

    event_routes.install(app)

    if sample_history:  # the served API keeps the dashboard's history; tests sample on their own clock
        app.cleanup_ctx.append(dashboard_routes.sample_history)
    handlers = {**HANDLERS, **SCHEDULE_HANDLERS, **EVENT_HANDLERS, **WEBHOOK_HANDLERS, **DASHBOARD_HANDLERS}
    for op in OPERATIONS:
        # aiohttp's default segment pattern, [^{}/]+, is matched on the decoded path: an id holding "{" or
        # "}" (%7B, %7D) would find no route. Any segment is an id; _job_id decodes it from the raw path.
        path = op.path.replace("{job_id}", "{job_id:[^/]+}")
        app.router.add_route(op.method, path, handlers[op.operation_id], name=op.operation_id)
    return app


async def serve(config: Config, *, host: str | None = None, port: int | None = None, traced: bool = False) -> None:
    """Serve until SIGTERM or SIGINT, then finish in-flight requests and close Redis."""
    settings = config.settings
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    read_token = settings.api_read_token.get_secret_value() if settings.api_read_token is not None else None
    # A data route answers 503 within REDIS_TIMEOUT of Redis freezing, not after the freeze (issue 10).
    redis = create_redis(config.redis, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
    app = create_app(
        config.queues,
        redis,
        max_body_bytes=settings.api_max_body_bytes,
        token=token,
        read_token=read_token,
        traced=traced,
        sample_history=True,
        wait_replicas=config.redis.wait_replicas,
        wait_timeout_ms=config.redis.wait_timeout_ms,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    bind_host, bind_port = host or settings.api_host, port or settings.api_port
    site = web.TCPSite(runner, bind_host, bind_port)
    await site.start()
    # Start-up's objects out of the cyclic collector's reach: a full collection then walks only what requests
    # made, instead of holding the loop for tens of ms (as measured in the exporter, exporter/server.py).
    gc.collect()
    gc.freeze()
    log.info(
        "API on http://%s:%d (Redis %s, queues: %s, bearer token %s)",
        bind_host,
        bind_port,
        config.redis.display_url(),
        ", ".join(sorted(app[STATE].specs)),
        "required" if token else "not required",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("API stopping")
        await runner.cleanup()
        with contextlib.suppress(Exception):
            await redis.aclose()
        if traced:
            tracing.shutdown()  # flush the last spans
