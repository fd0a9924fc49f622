"""Reading pickles' plain data without unpickling them."""

from __future__ import annotations

import datetime as dt
import os
import pickle

import pytest

from arqscale.core.pickle_peek import OPAQUE, PeekError, looks_pickled, peek


class Custom:
    def __init__(self) -> None:
        self.x = 1


class Hostile:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_arq_payload_shape_in_every_protocol(protocol: int) -> None:
    shared = "shared-string"
    data = {
        "t": 3,
        "f": "send_email",
        "a": ("a@example.com", [1, 2.5, None, True], shared, dt.datetime(2024, 1, 1), Custom()),
        "k": {"subject": shared, "nested": {"s": False}, "big": 2**70, "blob": b"\x00\x01"},
        "et": 1_700_000_000_123,
        "s": True,
        "r": Hostile(),
    }
    value = peek(pickle.dumps(data, protocol=protocol))
    assert value["t"] == 3 and value["f"] == "send_email" and value["et"] == 1_700_000_000_123
    assert value["s"] is True and value["r"] is OPAQUE
    assert value["a"][:3] == ("a@example.com", [1, 2.5, None, True], "shared-string")
    assert value["a"][3] is OPAQUE and value["a"][4] is OPAQUE
    assert value["k"]["subject"] == "shared-string"  # memoized references resolve
    assert value["k"]["nested"] == {"s": False} and value["k"]["big"] == 2**70
    # Protocols 0-2 build bytes by calling _codecs.encode: a call, so it stays opaque.
    assert value["k"]["blob"] == (b"\x00\x01" if protocol >= 3 else OPAQUE)


def test_a_top_level_object_is_opaque() -> None:
    assert peek(pickle.dumps(Hostile())) is OPAQUE
    assert sorted(peek(pickle.dumps({2, 1}, protocol=4))) == [1, 2]  # sets come back as plain lists


@pytest.mark.parametrize("raw", [b"", b"\x80\x05", b"\x80\x04garbage", b"\x80\x05K\x01K\x02.", b'{"json": 1}'])
def test_malformed_bytes_raise_peek_error(raw: bytes) -> None:
    with pytest.raises(PeekError):
        peek(raw)


def test_looks_pickled() -> None:
    assert looks_pickled(pickle.dumps({"a": 1}))
    assert not looks_pickled(b'{"a": 1}')
