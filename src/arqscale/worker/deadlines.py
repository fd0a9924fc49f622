"""Job timeouts for a whole worker with one timer, instead of an ``asyncio.timeout`` per job.

Every job of a queue gets the same ``job_timeout``, so deadlines come in the order the calls start: an
insertion-ordered dict of the running calls is also ordered by deadline, and one timer armed for the oldest
call is enough. A call that ends leaves the dict (O(1)); the timer, when it fires, cancels the calls past
their deadline and re-arms itself for the next one. Per job this costs a dict insert and delete, where
``asyncio.timeout`` costs a timer handle, a context manager and ``current_task`` (bench/run.py's I/O-bound
load: 7-10 % of the worker's time in the profile, mostly ``Timeout.reschedule``).
"""

from __future__ import annotations

import asyncio


class Deadlines:
    """Cancels the task of each call still running ``seconds`` after it started; ``expired`` tells which."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._calls: dict[str, tuple[float, asyncio.Task[object]]] = {}
        self._expired: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        # Kept from the first call: asyncio.get_running_loop() is a getpid() system call in CPython 3.11.
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, job_id: str, task: asyncio.Task[object]) -> None:
        """The job's call starts now, in ``task``."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        self._calls.pop(job_id, None)  # a job id runs one call at a time; a restart goes to the end
        self._calls[job_id] = (deadline, task)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._fire)

    def end(self, job_id: str) -> bool:
        """The call ended (any way): True when it was cancelled for its deadline."""
        self._calls.pop(job_id, None)
        if job_id in self._expired:
            self._expired.discard(job_id)
            return True
        return False

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        late: list[str] = []
        for job_id, (deadline, _task) in self._calls.items():
            if deadline > now:
                self._timer = loop.call_at(deadline, self._fire)
                break
            late.append(job_id)
        for job_id in late:
            _deadline, task = self._calls.pop(job_id)
            self._expired.add(job_id)
            task.cancel()
