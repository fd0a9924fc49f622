"""Name the test that opened a socket transport nobody closed.

asyncio's "unclosed transport" warning names only a file descriptor, and it is raised where the garbage
collector happens to free the transport: often a later test, which then fails for another's leak (two CI
runs failed that way, in tests that open no socket). Each socket transport remembers the test that was
running when it was made, and the warning names that test, the socket's two ends and its protocol.
The suite shows these warnings in its summary rather than failing the test the collector ran in
(pyproject.toml says why): this says whose each one was.
"""

from __future__ import annotations

import warnings
from asyncio import selector_events
from typing import Any

current_test = "(no test: collection or a session fixture)"

_Transport: Any = selector_events._SelectorTransport
_plain_init = _Transport.__init__


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    _plain_init(self, *args, **kwargs)
    self._opened_during = current_test


def _del(self: Any, _warn: Any = warnings.warn) -> None:
    # asyncio's own __del__, with the origin in the message.
    if self._sock is not None:
        protocol = f"{type(self._protocol).__module__}.{type(self._protocol).__name__}"
        app = getattr(self._protocol, "_app_protocol", None)  # an SSL connection: whose it is
        if app is not None:
            protocol += f" for {type(app).__module__}.{type(app).__name__}"
        origin = getattr(self, "_opened_during", "(unknown)")
        _warn(
            f"unclosed transport {self!r}, opened during {origin}: {self._sock!r}, protocol {protocol}",
            ResourceWarning,
            source=self,
        )
        self._sock.close()


def install() -> None:
    _del.__qualname__ = "_SelectorTransport.__del__"  # named as asyncio's own in the warning's "ignored in"
    _Transport.__init__ = _init
    _Transport.__del__ = _del
