"""Kubernetes quantities (``"42"``, ``"1500m"``) for the External Metrics API.

The HPA reads every metric value as a ``resource.Quantity`` and works in milli-units, so a count is
written as a plain integer and a fraction with the smallest suffix that keeps it exact to the
nano-unit. Pure functions, unit-tested without a server.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

# Suffix and how many of that unit make one; tried from the coarsest so "1.5" becomes "1500m", not "1500000000n".
_SCALES: tuple[tuple[str, int], ...] = (("", 1), ("m", 1_000), ("u", 1_000_000), ("n", 1_000_000_000))
_NANO = Decimal("1e-9")


def format_quantity(value: float | int) -> str:
    """The canonical-enough quantity for ``value``: ``42`` -> ``"42"``, ``1.5`` -> ``"1500m"``.

    Values are rounded to the nano-unit, Kubernetes' finest scale. NaN and infinities have no quantity.
    """
    if isinstance(value, bool):
        raise TypeError("a quantity is a number, not a bool")
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be written as a Kubernetes quantity")
    # repr() is the shortest string that round-trips, so 0.1 stays 0.1 instead of 0.1000000000000000055...
    exact = Decimal(repr(value)).quantize(_NANO, rounding=ROUND_HALF_UP)
    for suffix, per_unit in _SCALES:
        scaled = exact * per_unit
        if scaled == scaled.to_integral_value():
            whole = int(scaled)
            return f"{whole}{suffix}" if whole else "0"
    raise AssertionError("unreachable: every value rounded to nanos fits the nano scale")  # pragma: no cover


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity we write (plain, ``m``, ``u`` or ``n``); used by tests and the benchmark."""
    for suffix, per_unit in reversed(_SCALES):
        if suffix and text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) / per_unit
    return Decimal(text)
