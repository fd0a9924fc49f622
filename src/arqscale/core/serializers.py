"""Job payload serializers.

arq pickles payloads by default, which lets anyone who can write to Redis run code in a worker.
arqscale queues default to JSON (data only); ``serializer: pickle`` is an explicit per-queue opt-in
for existing arq producers. The API and the dead-letter tools only ever decode JSON.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Literal

Serializer = Callable[[dict[str, Any]], bytes]
Deserializer = Callable[[bytes], dict[str, Any]]


def json_dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=_not_json).encode()


def json_dumps_one_thread() -> Serializer:
    """``json_dumps``, byte for byte, at about half its cost: one C encoder built once, where ``json.dumps`` with
    options builds an encoder per call (a worker writes one result per job: bench/run.py's profile). The encoder's
    circular-reference marks live between calls, so one thread only (a worker's event loop), and they are
    cleared after an error (an encoding that fails midway leaves its marks behind)."""
    if c_make_encoder is None:  # no C accelerator in this Python
        return json_dumps
    markers: dict[int, Any] = {}
    encode = c_make_encoder(markers, _not_json, encode_basestring_ascii, None, ":", ",", False, False, True)

    def dumps(obj: dict[str, Any]) -> bytes:
        try:
            return "".join(encode(obj, 0)).encode()
        except BaseException:
            markers.clear()
            raise

    return dumps


# The C scanner under json.loads: one call parses a whole document (see _parse).
_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__, not in the stubs


def _parse(data: bytes | str) -> Any:
    """``json.loads(data)``: the same value, or the same error. UTF-8 text that is one JSON value from its first
    character to its last (every payload a producer writes) goes straight to the C scanner; anything else (a
    BOM, UTF-16, whitespace around the value, an error) goes through ``json.loads`` itself. Its Python layers
    (the encoding guess, ``decode``, ``raw_decode``) were about a tenth of a no-op job's worker CPU."""
    try:
        text = data if isinstance(data, str) else data.decode()
        value, end = _scan_once(text, 0)
    except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
        return json.loads(data)
    return value if end == len(text) else json.loads(data)


def json_loads(data: bytes) -> dict[str, Any]:
    """A JSON job or result. A cancelled job's result (``x: "cancelled"``, see ``cancellation``) comes back
    with ``r`` as ``asyncio.CancelledError``, what arq's ``Job.abort()`` waits for: plain arq clients of a
    JSON queue pass this function as their ``job_deserializer``."""
    value = _parse(data)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    if value.get("x") == "cancelled" and value.get("s") is False and isinstance(value.get("r"), str):
        value["r"] = asyncio.CancelledError(value["r"])
    return value


def _not_json(obj: object) -> Any:
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable; use plain data (str, int, float, list, dict)")


def pickle_dumps(obj: dict[str, Any]) -> bytes:
    return pickle.dumps(obj)


def pickle_loads(data: bytes) -> dict[str, Any]:
    # Only reached on queues that opted in to pickle.
    value = pickle.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"expected a pickled dict, got {type(value).__name__}")
    return value


def for_queue(kind: Literal["json", "pickle"], *, one_thread: bool = False) -> tuple[Serializer, Deserializer]:
    """The queue's pair; ``one_thread``: a serializer for one thread's use only, faster (``json_dumps_one_thread``)."""
    if kind == "pickle":
        return pickle_dumps, pickle_loads
    return (json_dumps_one_thread() if one_thread else json_dumps), json_loads
