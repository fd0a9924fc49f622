"""The API's routes for undeliverable webhooks (the dead store): list, read, retry and purge them.

Their rows are in ``arqscale.api.openapi.OPERATIONS``; the store is ``arqscale.core.webhook_store``.
"""

from __future__ import annotations

from aiohttp import web

from arqscale.api.app import STATE, Handler, Problem, _json, _query_int, _spec
from arqscale.api.openapi import FieldError
from arqscale.core.webhook_store import DEFAULT_PAGE, MAX_PAGE, WebhookStore


def _store(request: web.Request) -> WebhookStore:
    return WebhookStore(request.app[STATE].redis, _spec(request))


def _id(request: web.Request) -> str:
    return request.match_info["delivery_id"]


async def list_dead_webhooks(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    offset = _query_int(request, "offset", 0, 0, 10**9)
    limit = _query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    return _json(await store.dead_page(offset, limit))


async def get_dead_webhook(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    item = await store.dead_one(_id(request))
    if item is None:
        raise Problem(404, "not_found", f"no undeliverable webhook {_id(request)!r} in queue {store.spec.name!r}")
    return _json(item)


async def retry_dead_webhooks(request: web.Request) -> web.StreamResponse:
    return _json(await _store(request).retry_dead(), 202)


async def retry_dead_webhook(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    result = await store.retry_dead([_id(request)])
    if not result.retried:
        raise Problem(404, "not_found", f"no undeliverable webhook {_id(request)!r} in queue {store.spec.name!r}")
    return _json(result, 202)


async def purge_dead_webhooks(request: web.Request) -> web.StreamResponse:
    if request.query.get("all", "").lower() != "true":
        # Deleting every entry must be asked for by name: a bare DELETE is too easy to send by mistake.
        raise Problem(
            422,
            "validation_error",
            "give all=true to delete every undeliverable webhook of the queue",
            [FieldError(field="all", message="must be true")],
        )
    return _json(await _store(request).purge_dead())


async def purge_dead_webhook(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    result = await store.purge_dead([_id(request)])
    if not result.deleted:
        raise Problem(404, "not_found", f"no undeliverable webhook {_id(request)!r} in queue {store.spec.name!r}")
    return _json(result)


HANDLERS: dict[str, Handler] = {
    "list_dead_webhooks": list_dead_webhooks,
    "get_dead_webhook": get_dead_webhook,
    "retry_dead_webhooks": retry_dead_webhooks,
    "retry_dead_webhook": retry_dead_webhook,
    "purge_dead_webhooks": purge_dead_webhooks,
    "purge_dead_webhook": purge_dead_webhook,
}
