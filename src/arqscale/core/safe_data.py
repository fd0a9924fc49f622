"""Hostile data made harmless: what enters a queue is checked, what is stored or shown is made encodable.

Producers write whatever they like into Redis (plain arq accepts any Python value and any id), and a JSON
body may carry text that is not Unicode (a lone UTF-16 surrogate, ``"\\ud800"``, is valid JSON). Such
values break encoders far from where they entered: UTF-8 refuses surrogates, pydantic refuses nesting
deeper than its serializer allows, and a huge argument copied into several records multiplies memory.

Two tools, used at the two ends:

- ``check_arguments`` refuses, where a job enters (the Producer, so the API, the CLI and Python
  producers alike), arguments that cannot come back out: un-encodable text, nesting deeper than
  ``MAX_DEPTH``, a payload over the size limit. The message names the place (``args.0.x``).
- ``shown`` turns any value into one that every encoder accepts (surrogates escaped as ``\\udXXX`` text,
  depth, string length and item counts capped, other types as their repr). The worker builds every
  record it stores from such values, and the readers (API, CLI, dashboard) render stored data through
  it, so no stored value can jam a worker slot or turn a route into a 500.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# Deepest nesting a job's arguments may have. pydantic's serializer stops at a few hundred levels and the
# JSON decoder at Python's recursion limit; real arguments are a few levels deep.
MAX_DEPTH = 64
# A job payload (arq's serialized job: function, args, kwargs, timestamps) larger than this is refused at
# enqueue. Redis holds it for up to two weeks and every worker reads it whole.
MAX_PAYLOAD_BYTES = 1_048_576
# What a stored record (a dead-letter entry, an error) keeps of a value, for people to read.
SHOWN_DEPTH = 32
SHOWN_TEXT = 4096
SHOWN_ITEMS = 200
# A dead-letter entry's readable copy of the arguments, at most: the payload itself is kept for requeue.
PREVIEW_BYTES = 4096
# An error text and a traceback kept with a failed try or a dead job.
ERROR_CHARS = 4096
TRACEBACK_CHARS = 16384


class UnsafeArguments(ValueError):
    """Arguments that could be enqueued but not stored, shown or run safely; ``field`` says where."""

    def __init__(self, field: str, reason: str, job: str | None = None) -> None:
        super().__init__(f"job {job}: {field}: {reason}" if job else f"{field}: {reason}")
        self.field = field
        self.reason = reason


def escaped(text: str) -> str:
    """``text`` with every character UTF-8 cannot encode (lone surrogates) written as ``\\udXXX``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def clipped(text: str, limit: int) -> str:
    """Encodable ``text`` of at most about ``limit`` characters, saying how much was cut."""
    text = escaped(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters not kept)"


def shown(
    value: Any, *, depth: int = SHOWN_DEPTH, text: int = SHOWN_TEXT, items: int = SHOWN_ITEMS, _level: int = 0
) -> Any:
    """A copy of ``value`` that any JSON encoder (and UTF-8) accepts, bounded in depth, text and items.

    Plain data keeps its shape; a part deeper than ``depth`` becomes a note, other types their repr.
    Never recursive beyond ``depth``, so even a value nested a million deep costs ``depth`` frames.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clipped(value, text)
    if isinstance(value, BaseModel):
        value = dict(value)  # its fields, nested models included, as plain data
    if isinstance(value, Mapping | list | tuple):
        if _level >= depth:
            return f"<{type(value).__name__} nested deeper than {depth} levels, not shown>"
        kw: dict[str, Any] = {"depth": depth, "text": text, "items": items, "_level": _level + 1}
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for n, (k, v) in enumerate(value.items()):
                if n >= items:
                    out["<not shown>"] = f"{len(value) - items} more items"
                    break
                out[clipped(k if isinstance(k, str) else repr(k), text)] = shown(v, **kw)
            return out
        shown_items = [shown(v, **kw) for v in value[:items]]
        if len(value) > items:
            shown_items.append(f"<{len(value) - items} more items not shown>")
        return shown_items
    return clipped(_repr(value), text)


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a hostile __repr__ must not take the record down with it
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"


def preview(value: Any, limit: int = PREVIEW_BYTES) -> Any:
    """``shown(value)``, or when its JSON is longer than ``limit`` bytes, that JSON cut to ``limit``
    characters as a string saying so: a record keeps a glimpse of a large argument, not a copy."""
    safe = shown(value)
    text = json.dumps(safe, ensure_ascii=False)
    if len(text.encode()) <= limit:
        return safe
    return f"{text[:limit]}... (arguments of {len(text.encode())} bytes shown in part)"


def check_arguments(args: Any, kwargs: Any) -> None:
    """Refuse arguments that a worker or a reader could not handle: text that is not Unicode, keys that are
    not text, nesting deeper than ``MAX_DEPTH``. Raises ``UnsafeArguments`` naming the place."""
    stack: list[tuple[Any, str, int]] = [(args, "args", 0), (kwargs, "kwargs", 0)]
    while stack:  # iterative: a hostile value may be nested far deeper than the interpreter's stack
        value, where, level = stack.pop()
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, Mapping | list | tuple):
            if level > MAX_DEPTH:
                raise UnsafeArguments(where, f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, Mapping):
                for k, v in value.items():
                    if isinstance(k, str):
                        _check_text(k, f"{where} (a key)")
                    stack.append((v, f"{where}.{escaped(str(k))[:40]}", level + 1))
            else:
                stack.extend((v, f"{where}.{i}", level + 1) for i, v in enumerate(value))


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise UnsafeArguments(
            where,
            f"holds {bad.encode('utf-8', 'backslashreplace').decode()}, a lone UTF-16 surrogate (not Unicode text)",
        ) from None


def check_payload_size(payload: bytes, limit: int = MAX_PAYLOAD_BYTES) -> None:
    if len(payload) > limit:
        raise UnsafeArguments("args", f"the job's payload is {len(payload)} bytes, over the limit of {limit} bytes")


def render(value: Any) -> Any:
    """``value`` made encodable for showing it whole: surrogates escaped and depth capped at ``MAX_DEPTH``,
    nothing else cut (a stored result is shown as it is, unless it could not be shown at all)."""
    return shown(value, depth=MAX_DEPTH, text=sys.maxsize, items=sys.maxsize)


def model_json(model: BaseModel) -> str:
    """``model.model_dump_json()``, or when stored data inside it cannot be encoded (a lone surrogate,
    nesting deeper than pydantic's serializer allows), the same document rendered safely: never an error."""
    try:
        return model.model_dump_json()
    except ValueError:  # PydanticSerializationError
        return json.dumps(render(model), ensure_ascii=False)


def safe_copy(model: M) -> M:
    """A copy of ``model`` whose every value ``render`` made safe (for printing and serializing)."""
    try:
        model.model_dump_json()
    except ValueError:
        return type(model).model_validate(render(model))
    return model
