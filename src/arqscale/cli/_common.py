"""What the Redis-talking commands share: config, one client per run, and clear failure lines.

Bad input prints one line on stderr and exits 2; Redis that does not answer exits 1 with the
redacted URL (never the password).
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arqscale.core.config import Config, load_config_or_exit
from arqscale.core.connection import create_redis
from arqscale.core.spec import QueueSpec, UnknownQueueError, arq_queue


class UsageError(Exception):
    """Bad input: the message is printed as one line and the command exits 2."""


def fail(command: str, message: str, code: int = 2) -> int:
    print(f"arqscale {command}: {message}", file=sys.stderr)
    return code


def arq_spec(config: Config, name: str) -> QueueSpec:
    try:
        return arq_queue(config.queues, name)
    except UnknownQueueError as exc:
        raise UsageError(str(exc)) from None


ENCODED_HELP = (
    "the job ids given are percent-encoded UTF-8 (as in the API's paths, e.g. a%%00b): for ids a command "
    "line cannot carry (NUL) and the ones listings show marked [encoded]"
)


def job_id_argument(raw: str, encoded: bool) -> str:
    """A job id from the command line. Plain arq accepts any text as an id (issue 10); argv carries
    everything but NUL, so ``--encoded`` takes the percent-encoded form the API's paths use."""
    if not encoded:
        return raw
    try:
        job_id = urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise UsageError(f"--encoded: {raw!r} does not decode to UTF-8 text") from None
    if not job_id:
        raise UsageError("--encoded: the job id is empty")
    return job_id


def shown_id(job_id: str) -> str:
    """A job id for a human reader: as is when printable, else percent-encoded and marked, so a newline
    or a terminal escape sequence in an id can neither break a listing's lines nor drive the terminal,
    and the shown text goes back in with ``--encoded``."""
    if job_id.isprintable() and job_id.strip() == job_id and not job_id.endswith(" [encoded]"):
        return job_id
    return urllib.parse.quote(job_id, safe="") + " [encoded]"


def parse_json(option: str, text: str | None, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        want = "a JSON array, e.g. '[1, \"a\"]'" if kind is list else "a JSON object, e.g. '{\"key\": 1}'"
        raise UsageError(f"{option} must be {want}")
    return value


def _redact(text: str, config: Config) -> str:
    url = config.redis.connection_url()
    # Longest first: a URL holds its password, and must be replaced whole before the password is.
    for secret in sorted(config.redis.secrets(), key=len, reverse=True):
        text = text.replace(secret, config.redis.display_url() if secret == url else "***")
    return text


def check_redis_url(config: Config) -> None:
    """A malformed Redis URL is bad input, not a traceback (creating a client connects to nothing)."""
    try:
        client = create_redis(config.redis)
    except ValueError as exc:
        reason = _redact(str(exc), config)
        raise UsageError(f"invalid Redis settings ({config.redis.display_url()}): {reason}") from None
    # The pool has no connection yet; closing it is just bookkeeping.
    del client


def run_with_redis(command: str, body: Callable[[Config, Redis], Awaitable[int]]) -> int:
    """Load the config, open one Redis client, run ``body``, and turn failures into exit codes."""
    config = load_config_or_exit()
    try:
        check_redis_url(config)
    except UsageError as exc:
        return fail(command, str(exc))

    async def main() -> int:
        redis = create_redis(config.redis)
        try:
            return await body(config, redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except UsageError as exc:
        return fail(command, str(exc))
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        reason = _redact(str(exc), config)
        return fail(command, f"cannot reach Redis at {config.redis.display_url()}: {reason}", 1)
    except RedisError as exc:
        return fail(command, f"Redis error: {_redact(str(exc), config)}", 1)
