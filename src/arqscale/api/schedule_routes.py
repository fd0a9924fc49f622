"""The API's schedule routes: list, read, create or replace, pause, resume and remove a queue's schedules.

Their rows are in ``arqscale.api.openapi.OPERATIONS`` like every route; ``arqscale.api.app`` registers these
handlers with the rest. The store is ``arqscale.core.schedules``.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from arqscale.api.app import STATE, Handler, Problem, _body, _json, _spec, _validation_problem
from arqscale.api.openapi import FieldError
from arqscale.core.producer import UnknownFunctionError
from arqscale.core.schedule_spec import SCHEDULE_NAME_RE, Schedule, ScheduleFields
from arqscale.core.schedules import (
    DeclaredScheduleError,
    ScheduleChange,
    ScheduleConflictError,
    ScheduleList,
    ScheduleNotFoundError,
    ScheduleStore,
)


def _store(request: web.Request) -> ScheduleStore:
    return ScheduleStore(request.app[STATE].redis, _spec(request))


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not SCHEDULE_NAME_RE.match(name):
        raise Problem(
            422,
            "validation_error",
            "invalid schedule name",
            [FieldError(field="name", message="1-40 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit")],
        )
    return name


def _not_found(store: ScheduleStore, name: str) -> Problem:
    return Problem(404, "not_found", f"queue {store.spec.name!r} has no schedule {name!r}")


async def list_schedules(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    return _json(ScheduleList(queue=store.spec.name, schedules=await store.views()))


async def get_schedule(request: web.Request) -> web.StreamResponse:
    store, name = _store(request), _name(request)
    try:
        return _json(await store.get(name))
    except ScheduleNotFoundError:
        raise _not_found(store, name) from None


async def put_schedule(request: web.Request) -> web.StreamResponse:
    store, name = _store(request), _name(request)
    data = await _body(request)
    try:
        fields = ScheduleFields.model_validate(data)
        schedule = Schedule(name=name, **fields.model_dump())
    except ValidationError as exc:
        raise _validation_problem(exc) from None
    try:
        outcome = await store.put(schedule)
    except UnknownFunctionError as exc:
        details = [FieldError(field="function", message="unknown function")]
        raise Problem(422, "unknown_function", str(exc), details) from None
    except DeclaredScheduleError as exc:
        raise Problem(409, "declared_schedule", str(exc)) from None
    except ScheduleConflictError as exc:
        raise Problem(409, "conflict", str(exc)) from None
    except ValueError as exc:  # a priority the queue does not have
        raise Problem(422, "validation_error", str(exc), [FieldError(field="priority", message=str(exc))]) from None
    return _json(await store.get(name), 201 if outcome == "created" else 200)


async def delete_schedule(request: web.Request) -> web.StreamResponse:
    store, name = _store(request), _name(request)
    try:
        removed = await store.remove(name)
    except DeclaredScheduleError as exc:
        raise Problem(409, "declared_schedule", str(exc)) from None
    if not removed:
        raise _not_found(store, name)
    return _json(ScheduleChange(queue=store.spec.name, name=name, changed=True))


async def pause_schedule(request: web.Request) -> web.StreamResponse:
    store, name = _store(request), _name(request)
    try:
        changed = await store.pause(name)
    except ScheduleNotFoundError:
        raise _not_found(store, name) from None
    return _json(ScheduleChange(queue=store.spec.name, name=name, changed=changed))


async def resume_schedule(request: web.Request) -> web.StreamResponse:
    store, name = _store(request), _name(request)
    try:
        changed = await store.resume(name)
    except ScheduleNotFoundError:
        raise _not_found(store, name) from None
    except ScheduleConflictError as exc:
        raise Problem(409, "conflict", str(exc)) from None
    return _json(ScheduleChange(queue=store.spec.name, name=name, changed=changed))


HANDLERS: dict[str, Handler] = {
    "list_schedules": list_schedules,
    "get_schedule": get_schedule,
    "put_schedule": put_schedule,
    "delete_schedule": delete_schedule,
    "pause_schedule": pause_schedule,
    "resume_schedule": resume_schedule,
}
