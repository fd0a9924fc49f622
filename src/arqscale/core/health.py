"""A long-running process's health as its probes report it: live unless Redis stayed away too long, ready once
started, not draining and reaching Redis. Shared by the worker and the webhook deliverer (each serves it on its
own port, from its own event loop)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Health:
    """What the probes report. Written by the process's loop, read by the handlers (same thread)."""

    redis_unreachable_seconds: float
    draining: bool = False
    started: bool = False
    redis_down_since: float | None = field(default=None)  # monotonic time of the first failure in a row
    last_redis_error: str | None = None

    def redis_failed(self, error: BaseException) -> None:
        if self.redis_down_since is None:
            self.redis_down_since = time.monotonic()
        self.last_redis_error = f"{type(error).__name__}: {error}"

    def redis_ok(self) -> None:
        self.redis_down_since = None

    def redis_down_for(self) -> float:
        return 0.0 if self.redis_down_since is None else time.monotonic() - self.redis_down_since

    def live(self) -> tuple[bool, str]:
        down = self.redis_down_for()
        if down > self.redis_unreachable_seconds:
            return False, f"redis unreachable for {down:.0f}s ({self.last_redis_error})"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.started:
            return False, "starting"
        if self.redis_down_since is not None:
            return False, f"redis unreachable ({self.last_redis_error})"
        return True, "ok"
