"""periodic(): the loop every background service runs on. A round that fails
never ends the loop; outages are logged quietly, bugs with their traceback."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest

from goodfellaz17.periodic import jittered, periodic


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, Any, dict[str, Any]]] = []

    def log(self, level: int, event: str, **fields: Any) -> None:
        self.lines.append((logging.getLevelName(level), event, fields))

    def exception(self, event: str, **fields: Any) -> None:
        self.lines.append(("EXCEPTION", event, fields))


class Outage(Exception):
    pass


async def test_a_failed_round_never_ends_the_loop() -> None:
    log = RecordingLog()
    rounds = 0
    third_round = asyncio.Event()

    async def run_once() -> int:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise Outage("database away")
        if rounds == 2:
            raise ValueError("a bug")
        third_round.set()
        return rounds

    loop = asyncio.create_task(
        periodic(
            run_once,
            0.0,
            name="test",
            outages=(Outage,),
            outage_event="test: database unavailable",
            outage_level=logging.WARNING,
            crash_event="test crashed",
            log=log,
        )
    )
    async with asyncio.timeout(5):
        await third_round.wait()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert log.lines == [
        ("WARNING", "test: database unavailable", {"loop": "test", "error": "database away"}),
        ("EXCEPTION", "test crashed", {"loop": "test"}),
    ]


async def test_wait_first_runs_nothing_before_the_first_interval() -> None:
    ran = asyncio.Event()

    async def run_once() -> None:
        ran.set()

    loop = asyncio.create_task(periodic(run_once, 3600.0, name="test", wait_first=True))
    for _ in range(10):
        await asyncio.sleep(0)  # let the loop run as far as it will without time passing
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert not ran.is_set()


async def test_without_wait_first_the_first_round_runs_at_once() -> None:
    ran = asyncio.Event()

    async def run_once() -> None:
        ran.set()

    loop = asyncio.create_task(periodic(run_once, 3600.0, name="test"))
    async with asyncio.timeout(5):
        await ran.wait()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop


def test_jitter_spreads_the_interval_within_its_bounds() -> None:
    rng = random.Random(17)
    delays = [jittered(10.0, 0.2, rng) for _ in range(1000)]
    assert 8.0 <= min(delays) < 8.2
    assert 11.8 < max(delays) <= 12.0
    assert jittered(10.0, 0.0, rng) == 10.0
