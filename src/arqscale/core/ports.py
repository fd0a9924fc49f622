"""Free TCP ports for child processes (the demo's stack, the local autoscaler's workers, the test
suite, the benchmarks).

A port is found by binding port 0 and closing the socket, and the child binds it later. The kernel picks
port 0 at random and may pick one it just gave out if nothing holds it yet: two children then get one port.
The second child's bind fails, and the first child's ``/readyz`` answers for both, so a supervisor takes a
dead child for a ready one (about one start in 700 of seven ports, measured; a CI run saw it). So this
process never hands out the same port twice within ``_REMEMBERED`` picks.
"""

from __future__ import annotations

import socket
import threading
from collections import deque

_REMEMBERED = 4096  # of 28,000 ephemeral ports: a long-lived autoscaler does not fill its memory
_given: deque[int] = deque(maxlen=_REMEMBERED)
_given_set: set[int] = set()
_lock = threading.Lock()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _remember(port: int) -> int:
    if port in _given_set:  # a preferred port given again: one entry, or its older copy would forget it
        return port
    if len(_given) == _given.maxlen:
        _given_set.discard(_given[0])
    _given.append(port)
    _given_set.add(port)
    return port


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens there (even if given out before: the caller chose it), else a
    free port this process has not given out recently."""
    with _lock:
        if preferred is not None and _bindable(preferred):
            return _remember(preferred)
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _given_set:
                return _remember(port)
