"""worker/turns.py: the lanes' round trips overlap each other; the heartbeat waits for them and goes alone."""

from __future__ import annotations

import asyncio

from arqscale.worker.turns import Turns


async def test_round_trips_overlap_and_the_heartbeat_goes_alone_before_new_ones() -> None:
    turns = Turns()
    log: list[str] = []
    release = {name: asyncio.Event() for name in ("a", "b", "beat", "c")}

    async def trip(name: str) -> None:
        async with turns.shared():
            log.append(f"{name} in")
            await release[name].wait()
            log.append(f"{name} out")

    async def beat() -> None:
        async with turns.alone():
            log.append("beat in")
            await release["beat"].wait()
            log.append("beat out")

    a, b = asyncio.create_task(trip("a")), asyncio.create_task(trip("b"))
    await asyncio.sleep(0)
    assert log == ["a in", "b in"]  # two round trips at once
    heartbeat = asyncio.create_task(beat())
    await asyncio.sleep(0)
    c = asyncio.create_task(trip("c"))  # asked for after the heartbeat: waits for it
    await asyncio.sleep(0)
    assert log == ["a in", "b in"] and turns.busy
    release["a"].set()
    await asyncio.sleep(0.01)
    assert log == ["a in", "b in", "a out"]  # the heartbeat still waits for b
    release["b"].set()
    await asyncio.sleep(0.01)
    assert log[-2:] == ["b out", "beat in"]
    release["beat"].set()
    await asyncio.sleep(0.01)
    assert log[-2:] == ["beat out", "c in"]
    release["c"].set()
    await asyncio.gather(a, b, heartbeat, c)
    assert not turns.busy


async def test_a_heartbeat_cancelled_while_waiting_lets_round_trips_go_on() -> None:
    turns = Turns()
    held = asyncio.Event()

    async def hold() -> None:
        async with turns.shared():
            await held.wait()

    first = asyncio.create_task(hold())
    await asyncio.sleep(0)

    async def beat() -> None:
        async with turns.alone():
            raise AssertionError("the heartbeat must not get its turn while a round trip holds one")

    waiting = asyncio.create_task(beat())
    await asyncio.sleep(0)
    later_entered = asyncio.Event()

    async def later() -> None:
        async with turns.shared():
            later_entered.set()

    second = asyncio.create_task(later())
    await asyncio.sleep(0)
    assert not later_entered.is_set()  # held off for the waiting heartbeat
    waiting.cancel()
    await asyncio.wait_for(later_entered.wait(), 1)  # the heartbeat gave up: the round trip goes
    held.set()
    await asyncio.gather(first, second)
    assert waiting.cancelled() and not turns.busy
