"""Tasks write to their job's log: ``await ctx["log"](text)`` and any ``logging`` record while they run.

One ``JobLogHandler`` sits on the root logger of a worker process. Which job a record belongs to is a
context variable set around the task call: each job runs in its own asyncio task (and ``asyncio.to_thread``
copies the context), so concurrent jobs in one process never see each other's lines, and the worker's own
records (outside any task call) go to no job.

Lines are buffered per job (``logging`` calls are synchronous and may come from threads) and written in
batches by the worker's flusher, by ``await ctx["log"](...)`` (which returns once its line is stored, as
BullMQ's ``job.log()`` does) and once more when the try ends, before its outcome is sent: the outcome's script
then gives the log the result's TTL. Storage and caps: ``arqscale.core.job_logs``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arqscale.core import job_logs
from arqscale.core.keys import QueueKeys
from arqscale.core.spec import JobLogSettings
from arqscale.worker.waiting import check_cancelled

logger = logging.getLogger("arqscale.worker")

FLUSH_SECONDS = 0.25
# Lines kept in memory per job while Redis does not answer; more are dropped (and counted) until it does.
BUFFER_MAX = 10_000

_current: contextvars.ContextVar[JobLog | None] = contextvars.ContextVar("arqscale_job_log", default=None)


class JobLog:
    """The log of one try of one job, as its worker buffers it."""

    def __init__(self, sink: JobLogSink, job_id: str, attempt: int) -> None:
        self.sink = sink
        self.job_id = job_id
        self.attempt = attempt
        self._lines: list[str] = []
        self._guard = threading.Lock()  # logging may call from threads (asyncio.to_thread copies the context)
        # One flush at a time per job, so batches land in order. Made at the first flush: most tries log nothing.
        self._writing: asyncio.Lock | None = None
        self.dropped = 0
        self.touched = False  # a line was ever added: the outcome must give the log key the result's TTL

    def add(self, level: str, message: str) -> None:
        line = job_logs.entry(int(time.time() * 1000), self.attempt, level, message, self.sink.limits)
        self.touched = True
        with self._guard:
            if len(self._lines) >= BUFFER_MAX:
                self.dropped += 1
                return
            self._lines.append(line)
        self.sink.dirty(self)

    def has_lines(self) -> bool:
        with self._guard:
            return bool(self._lines)

    async def log(self, message: object, level: str = "INFO") -> None:
        """``ctx["log"]``: append a line and return once it is stored (or Redis failed to take it)."""
        self.add(str(level).upper(), str(message))
        await self.flush()

    async def flush(self) -> None:
        token = _current.set(None)  # whatever logs while we write (redis-py, our warnings) is not the job's
        try:
            if self._writing is None:
                self._writing = asyncio.Lock()
            async with self._writing:
                with self._guard:
                    lines, self._lines = self._lines, []
                if not lines:
                    return
                try:
                    await job_logs.append(self.sink.redis, self.sink.keys.logs(self.job_id), lines, self.sink.limits)
                except (RedisError, OSError) as exc:
                    with self._guard:
                        room = max(BUFFER_MAX - len(self._lines), 0)
                        self.dropped += max(len(lines) - room, 0)
                        self._lines[:0] = lines[:room]  # kept for the next flush, in order
                    logger.debug("job %s: log lines not stored yet: %s", self.job_id, exc)
        finally:
            _current.reset(token)


class JobLogSink:
    """A worker's job logs: the buffers of its running tries and the task that writes them."""

    def __init__(self, redis: Redis, limits: JobLogSettings, queue_keys: QueueKeys | None = None) -> None:
        self.redis = redis
        self.limits = limits
        self.keys = queue_keys or QueueKeys.for_queue("", "")  # arq's layout: one log key per job, any queue
        self.enabled = limits.max_lines > 0 and limits.max_bytes > 0
        self._dirty: set[JobLog] = set()
        self._guard = threading.Lock()

    def open(self, job_id: str, attempt: int) -> JobLog:
        return JobLog(self, job_id, attempt)

    def dirty(self, log: JobLog) -> None:
        with self._guard:
            self._dirty.add(log)

    def ended(self, log: JobLog) -> bool:
        """The try ended: whether ``close`` has anything to do (most tries log nothing: no call to await)."""
        if not log.touched:  # never a line (the usual try): never in `_dirty`, nothing to store; no lock taken
            return False
        with self._guard:
            self._dirty.discard(log)
        return log.has_lines() or bool(log.dropped)

    async def close(self, log: JobLog) -> None:
        """Store what ``ended`` found left before the try's outcome is sent."""
        if log.has_lines():
            await log.flush()
        if log.dropped:
            logger.warning("job %s: %d log line(s) could not be stored (Redis unavailable)", log.job_id, log.dropped)

    async def run(self) -> None:
        """Write buffered lines every ``FLUSH_SECONDS``."""
        while True:
            check_cancelled()  # see worker.waiting: a Redis write may return although the task was cancelled
            await asyncio.sleep(FLUSH_SECONDS)
            with self._guard:
                logs, self._dirty = list(self._dirty), set()
            for log in logs:
                await log.flush()

    def bind(self, log: JobLog) -> contextvars.Token[JobLog | None]:
        """Route ``logging`` records of the current context (the task call) to ``log``."""
        return _current.set(log if self.enabled else None)

    @staticmethod
    def unbind(token: contextvars.Token[JobLog | None]) -> None:
        # Not contextlib.suppress: an object per call, and this runs once per job.
        try:  # noqa: SIM105
            _current.reset(token)
        except ValueError:  # the token was made in another context
            pass

    def ctx_log(self, log: JobLog) -> Callable[..., Awaitable[None]]:
        return log.log if self.enabled else _not_stored


async def _not_stored(message: object, level: str = "INFO") -> None:
    """``ctx["log"]`` on a queue whose job logs are off."""
    return None


class JobLogHandler(logging.Handler):
    """Copies records emitted while a job's task runs into that job's log (only its own worker's jobs: several
    workers in one process each have a handler, and a record must land once)."""

    def __init__(self, sink: JobLogSink, level: str) -> None:
        super().__init__(level)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        log = _current.get()
        if log is None or log.sink is not self.sink:
            return
        try:
            log.add(record.levelname, self.format(record))
        except Exception:  # a record whose message cannot be formatted must not fail the task
            self.handleError(record)
