"""Puts this process' wall clock ``ARQSCALE_TEST_CLOCK_SKEW`` seconds off (a pod whose clock drifted).

On ``PYTHONPATH`` for a test's subprocess only; ``time.monotonic`` is left alone, as NTP leaves it.
"""

from __future__ import annotations

import os
import time

_skew = float(os.environ.get("ARQSCALE_TEST_CLOCK_SKEW", "0"))
if _skew:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _skew
    time.time_ns = lambda: _time_ns() + int(_skew * 1e9)
