"""An event stream entry as a webhook body, and which deliveries it makes.

Body (Standard Webhooks' recommended shape)::

    {"type": "job.completed", "timestamp": "2026-12-04T15:41:43.123Z",
     "data": {"queue": "email", "job_id": "...", "event": "completed", "event_id": "1733...-0", "at": 1733...,
              "try": 1, "worker": "...", "duration_ms": 12}}

``data`` holds the entry's fields (docs/events.md): the always-present ``event``, ``job`` (as ``job_id``) and
``at`` (Redis ms), and whichever optional ones it has, numbers as numbers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from arqscale.core.spec import QueueSpec
from arqscale.core.webhook_spec import CALLBACK_ENDPOINT
from arqscale.core.webhook_store import Delivery, delivery_id, dumps

_INTS = ("try", "delay_ms", "duration_ms", "enqueued")
_FLOATS = ("progress",)
_TEXTS = ("worker", "func", "error", "reason", "message")


def event_data(queue: str, event_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "queue": queue,
        "job_id": fields.get("job", ""),
        "event": fields.get("event", ""),
        "event_id": event_id,
        "at": _number(fields.get("at"), int) or 0,
    }
    for name in _INTS:
        if (value := _number(fields.get(name), int)) is not None:
            data[name] = value
    for name in _FLOATS:
        if (value := _number(fields.get(name), float)) is not None:
            data[name] = value
    for name in _TEXTS:
        if fields.get(name) is not None:
            data[name] = fields[name]
    return data


def body(queue: str, event_id: str, fields: Mapping[str, str]) -> str:
    data = event_data(queue, event_id, fields)
    at = datetime.fromtimestamp(data["at"] / 1000, tz=UTC)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    return dumps({"type": f"job.{data['event']}", "timestamp": stamp, "data": data})


def deliveries(spec: QueueSpec, event_id: str, fields: Mapping[str, str], callback_url: str | None) -> list[Delivery]:
    """The deliveries one entry makes: each endpoint that wants its event, and the job's callback URL."""
    hooks = spec.webhooks
    event = fields.get("event", "")
    if hooks is None:
        return []
    targets: list[tuple[str, str | None]] = [(name, None) for name, ep in hooks.endpoints.items() if event in ep.events]
    if callback_url and hooks.callbacks is not None and event in hooks.callbacks.events:
        targets.append((CALLBACK_ENDPOINT, callback_url))
    if not targets:
        return []
    text = body(spec.name, event_id, fields)
    now = time.time()
    return [
        Delivery(
            id=delivery_id(spec.name, event_id, name),
            queue=spec.name,
            endpoint=name,
            url=url,
            event=event,
            job_id=fields.get("job", ""),
            body=text,
            created_at=now,
        )
        for name, url in targets
    ]


def _number(text: str | None, kind: type[int] | type[float]) -> Any:
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        return None
