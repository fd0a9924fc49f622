"""The API's event routes: a queue's or a job's events, as one JSON page or as Server-Sent Events.

``GET /v1/queues/{queue}/events`` and ``GET /v1/jobs/{job_id}/events``. A client that sends
``Accept: text/event-stream`` (an ``EventSource``) gets a stream that follows the queue's events until it
leaves; each SSE ``id:`` is the Redis stream id, so a reconnecting ``EventSource`` sends it back as
``Last-Event-ID`` and resumes exactly after it. Other clients get a JSON page of kept events (``after``,
``limit``). Reading only: the events are written by the scripts (``arqscale.core.events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from redis.exceptions import RedisError

from arqscale.api.app import STATE, Handler, Problem, _job_id, _json, _query_int, _spec
from arqscale.api.openapi import MAX_EVENT_PAGE, EventPage, EventView, FieldError
from arqscale.core import event_stream
from arqscale.core.events import Event, is_stream_id
from arqscale.core.safe_data import render

log = logging.getLogger("arqscale.api")

KEEPALIVE_SECONDS = 15.0  # an idle stream gets a comment line this often (proxies close silent connections)


def _after(request: web.Request) -> str | None:
    """``Last-Event-ID`` (an EventSource reconnecting), else ``after=``; None when neither is given."""
    for name, value in (("Last-Event-ID", request.headers.get("Last-Event-ID")), ("after", request.query.get("after"))):
        if value is None:
            continue
        if not is_stream_id(value):
            raise Problem(
                422,
                "validation_error",
                f"invalid {name}: expected a stream id <ms>-<seq>",
                [FieldError(field=name, message="a stream id such as 1733312345678-0")],
            )
        return value
    return None


def _wants_stream(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


def _view(event: Event) -> EventView | None:
    try:
        return EventView.model_validate(event.as_dict())
    except ValidationError:  # an event name this API does not know (a newer writer): left out
        return None


async def _page(request: web.Request, queue: str, job: str | None, after: str | None) -> web.StreamResponse:
    redis = request.app[STATE].redis
    limit = _query_int(request, "limit", 100, 1, MAX_EVENT_PAGE)
    start = after or "0-0"
    events = await event_stream.history(redis, queue, after=start, job=job, limit=limit, scan_max=_SCAN_MAX)
    gap = start != "0-0" and await event_stream.trimmed_after(redis, queue, start)
    views = [v for v in (_view(e) for e in events) if v is not None]
    last = events[-1].id if events else start
    return _json(EventPage(queue=queue, events=views, last_id=last, gap=gap))


# A job's JSON page scans at most this many entries of its queue's stream per request.
_SCAN_MAX = 100_000


def _sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    text = json.dumps(data, ensure_ascii=False, default=str)
    lines = ([f"id: {event_id}"] if event_id else []) + [f"event: {event}", f"data: {text}", "", ""]
    return "\n".join(lines).encode("utf-8", "replace")


async def _follow(request: web.Request, queue: str, job: str | None, after: str | None) -> web.StreamResponse:
    redis = request.app[STATE].redis
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    closing = request.app[CLOSING]
    tail = event_stream.Events(redis, queue, after=after, job=job)
    await response.write(b": arqscale events\n\n")
    try:
        await tail.start()
        if tail.gap:
            await response.write(_sse("gap", {"after": after}))
        idle_since = time.monotonic()
        while not closing.is_set() and not _gone(request):
            # Reads of at most a second each, so the loop sees a stopping API or a departed client within about
            # a second. Cancelling the handler is not relied on: a cancel that lands inside redis-py's read
            # (under its socket timeout) can be swallowed and the read retried, and the stream would never end.
            events = await tail.read()
            for event in events:
                view = _view(event)
                if view is not None:
                    data = render(view.model_dump(by_alias=True, exclude_none=True))
                    await response.write(_sse(event.event, data, event.id))
                    idle_since = time.monotonic()
            if time.monotonic() - idle_since >= KEEPALIVE_SECONDS:
                await response.write(b": keep-alive\n\n")
                idle_since = time.monotonic()
    except ConnectionResetError:  # the client left; aiohttp cancels the handler in most other cases
        pass
    except (RedisError, OSError) as exc:
        # Redis went away mid-stream: end it. An EventSource reconnects with Last-Event-ID and resumes exactly.
        log.warning("event stream of %s ended: Redis unavailable: %s", queue, exc)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write(b": redis unavailable; reconnect with Last-Event-ID\n\n")
    return response


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def queue_events(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    after = _after(request)
    if _wants_stream(request):
        return await _follow(request, spec.name, None, after)
    return await _page(request, spec.name, None, after)


async def job_events(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    job_id = _job_id(request)
    queue = request.query.get("queue")
    if queue is not None:
        if queue not in state.specs:
            known = ", ".join(sorted(state.specs)) or "(none)"
            raise Problem(404, "unknown_queue", f"unknown queue {queue!r}; known queues: {known}")
    else:
        queue = (await state.statuses.read(job_id)).queue
        if queue is None or queue not in state.specs:
            raise Problem(404, "unknown_job", f"job {job_id!r} not found; give its queue with queue=")
    after = _after(request) or "0-0"  # a job's events: from the oldest kept one unless told otherwise
    if _wants_stream(request):
        return await _follow(request, queue, job_id, after)
    return await _page(request, queue, job_id, after)


HANDLERS: dict[str, Handler] = {"queue_events": queue_events, "job_events": job_events}

# Set when the API stops: open streams never end on their own, and aiohttp waits for running handlers (its
# whole shutdown timeout, 60 s) before it closes; each stream's loop sees this within a second and ends.
CLOSING: web.AppKey[asyncio.Event] = web.AppKey("arqscale_events_closing")


def install(app: web.Application) -> None:
    """Give the app its closing flag, set on shutdown."""
    closing = asyncio.Event()
    app[CLOSING] = closing

    async def end_streams(app: web.Application) -> None:
        closing.set()

    app.on_shutdown.append(end_streams)
