"""A thread that notices when a task blocks the worker's event loop, and names the job that did it.

The loop cannot interrupt a task that never awaits (``time.sleep``, a CPU-bound loop, a C call).
Liveness handles the pod (the probe, served on the loop, stops answering and the kubelet restarts
it); this watchdog makes the aftermath readable: it finds the running job on the loop thread's
stack and reports it, so the job's last error (and its dead-letter entry, once its tries run out)
says "blocked the event loop" instead of just "worker lost".
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

logger = logging.getLogger("arqscale.worker")


class LoopWatchdog:
    """``beat()`` is called from the loop every ``interval``; a stall of ``threshold`` triggers ``on_blocked``.

    ``on_blocked(frame_locals, seconds)`` runs in the watchdog thread, once per stall, with the locals
    of the innermost frame running ``job_code`` (the worker's job runner), or None when the loop is
    blocked outside any job.
    """

    def __init__(
        self,
        job_code: CodeType,
        on_blocked: Callable[[dict[str, Any] | None, float], None],
        *,
        threshold: float = 2.0,
        check_every: float = 0.2,
    ) -> None:
        self.job_code = job_code
        self.on_blocked = on_blocked
        self.threshold = threshold
        self.check_every = check_every
        self.last_beat = time.monotonic()
        self._loop_thread_id = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="arqscale-loop-watchdog", daemon=True)

    def start(self) -> None:
        self._loop_thread_id = threading.get_ident()
        self.last_beat = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def _watch(self) -> None:
        reported_for = 0.0
        while not self._stop.wait(self.check_every):
            beat = self.last_beat
            stalled = time.monotonic() - beat
            if stalled < self.threshold or reported_for == beat:
                continue
            reported_for = beat
            try:
                self.on_blocked(self._job_locals(), stalled)
            except Exception:  # the watchdog must outlive any reporting problem
                logger.exception("loop watchdog: reporting a blocked loop failed")

    def _job_locals(self) -> dict[str, Any] | None:
        frame: FrameType | None = sys._current_frames().get(self._loop_thread_id)
        while frame is not None:
            if frame.f_code is self.job_code:
                return dict(frame.f_locals)
            frame = frame.f_back
        return None
