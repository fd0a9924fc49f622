"""``arqscale.core.ports.free_port``: never the same port twice to one process (two children, one port)."""

from __future__ import annotations

import socket

from arqscale.core import ports


def test_many_picks_never_repeat_a_port() -> None:
    # The kernel's own picks repeat: 2,000 of them from 28,000 ports repeat about 70 times (birthday bound).
    picked = [ports.free_port() for _ in range(2000)]
    assert len(set(picked)) == len(picked)


def test_a_bindable_preferred_port_is_taken_even_if_given_before() -> None:
    port = ports.free_port()
    assert ports.free_port(preferred=port) == port  # the caller chose it: e.g. --api-port
    assert list(ports._given).count(port) == 1


def test_a_preferred_port_in_use_gives_another() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = int(s.getsockname()[1])
        other = ports.free_port(preferred=taken)
    assert other != taken
    with socket.socket() as s:
        s.bind(("127.0.0.1", other))  # and it is free


def test_memory_is_bounded() -> None:
    for _ in range(ports._REMEMBERED + 10):
        ports.free_port()
    assert len(ports._given) == ports._REMEMBERED
    assert ports._given_set == set(ports._given)
