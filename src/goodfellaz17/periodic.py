"""periodic(): the one loop shape of every background service.

A background service is a small object whose `run_once()` does one round and
returns what it did (the worker's rescuer and control tick, the API process's
invariant monitor). `periodic` runs it every `interval` seconds, spread by
`jitter` (a fraction of the interval) so replicas drift apart, until it is
cancelled.

It must never let one round end the loop: an expected outage (one of
`outages`, e.g. the database being away) is logged at `outage_level` without a
traceback, anything else with its traceback, and the next round tries again.
It knows nothing of what it runs and imports none of the engine's layers, so
every layer may use it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from goodfellaz17.logs import get_logger

_log = get_logger(__name__)


def jittered(interval: float, jitter: float, rng: random.Random | None = None) -> float:
    """`interval` times a factor drawn uniformly from [1 - jitter, 1 + jitter]."""
    if not jitter:
        return interval
    uniform = rng.uniform if rng is not None else random.uniform
    return interval * uniform(1.0 - jitter, 1.0 + jitter)


async def periodic(
    run_once: Callable[[], Awaitable[object]],
    interval: float,
    *,
    name: str,
    jitter: float = 0.0,
    wait_first: bool = False,
    outages: tuple[type[Exception], ...] = (),
    outage_event: str = "background round skipped: database unavailable",
    outage_level: int = logging.DEBUG,
    crash_event: str = "background loop crashed; restarting",
    log: Any = None,
) -> NoReturn:
    """Run `run_once` now (or after one interval, with `wait_first`), then
    again each `interval` after the previous round ended, until cancelled."""
    log = log if log is not None else _log
    if wait_first:
        await asyncio.sleep(jittered(interval, jitter))
    while True:
        try:
            await run_once()
        except outages as exc:
            log.log(outage_level, outage_event, loop=name, error=str(exc)[:200])
        except Exception:
            log.exception(crash_event, loop=name)
        await asyncio.sleep(jittered(interval, jitter))
