"""The busy window: how fast a system drains a queue once it is working.

A poller on the benchmark's own connection asks the database every 10 ms
how far the drain has got. The window opens at the first poll that sees an
item finished and closes at the poll that sees nothing left, both on the
database's clock; the rate is the items finished in between over that time.
Start-up (process start, connecting, schema checks, the first fetch) falls
outside the window for every system alike, whether its workers were started
before the work arrived (the engine, Procrastinate) or after (the Node
peers). CPU of the workers and of PostgreSQL is sampled at the same polls.

Until the window opens the poller counts finished items (it must know how
many were done at the opening); afterwards it only asks whether anything is
left, a cheaper question, so that the poller takes as little as possible
from the system measured. The poller's own backend is never counted as the
system's CPU.

Never used to decide correctness: each caller checks afterwards that every
item finished exactly as it should.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from bench.pg import CpuSnapshot, PostgresCpu, backend_pid, process_cpu_seconds
from bench.procs import Child

POLL_SECONDS = 0.01


class DrainTimeout(RuntimeError):
    pass


@dataclass(frozen=True)
class DrainProbe:
    """The two questions the poller asks one system. Both return one row of
    (answer, clock_timestamp()) and may use %(total)s.

    `finished`: how many of `total` are finished (in the probe's own unit,
    e.g. units delivered for the engine). `any_left`: is anything left?"""

    finished: str
    any_left: str


@dataclass(frozen=True)
class BusyWindow:
    opened_at: datetime
    closed_at: datetime
    finished_before: int  # in the probe's unit, at the opening poll
    total: int  # in the probe's unit
    items: float  # items finished inside the window
    worker_cpu_s: float
    pg_cpu_s: float

    @property
    def seconds(self) -> float:
        return (self.closed_at - self.opened_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        """Flat `busy_*` fields for results.json; rates are None when the
        whole drain fell between two polls (toy sizes only)."""
        seconds = self.seconds
        measurable = seconds > 0 and self.items > 0
        return {
            "busy_seconds": seconds,
            "busy_items": self.items,
            "busy_items_per_s": self.items / seconds if measurable else None,
            "busy_worker_cpu_ms": self.worker_cpu_s / self.items * 1000 if measurable else None,
            "busy_pg_cpu_ms": self.pg_cpu_s / self.items * 1000 if measurable else None,
            "busy_worker_cores": self.worker_cpu_s / seconds if measurable else None,
            "busy_pg_cores": self.pg_cpu_s / seconds if measurable else None,
        }


def _ask(admin: psycopg.Connection[Any], sql: str, params: Mapping[str, Any]) -> tuple[Any, Any]:
    row = admin.execute(sql, params).fetchone()
    assert row is not None
    return row[0], row[1]


def _check_alive(children: Sequence[Child]) -> None:
    for child in children:
        child.check_alive()


def watch_drain(
    admin: psycopg.Connection[Any],
    probe: DrainProbe,
    *,
    total: int,
    items: int,
    cpu: PostgresCpu,
    worker_pids: Iterable[int],
    children: Sequence[Child] = (),
    timeout: float,
) -> BusyWindow:
    """Poll until the drain of `total` (probe units, standing for `items`
    items) is over; return its busy window."""
    pids = list(worker_pids)
    me = backend_pid(admin)
    params = {"total": total}
    deadline = time.monotonic() + timeout
    while True:
        finished, opened_at = _ask(admin, probe.finished, params)
        if int(finished) > 0:
            break
        _wait(deadline, children, "the first item to finish")
    pg_open: CpuSnapshot = cpu.snapshot()
    worker_open = process_cpu_seconds(pids)
    finished_before = int(finished)
    closed_at = opened_at
    while finished_before < total:
        left, closed_at = _ask(admin, probe.any_left, params)
        if not left:
            break
        _wait(deadline, children, "the queue to drain")
    pg_close = cpu.snapshot()
    worker_close = process_cpu_seconds(pids)
    return BusyWindow(
        opened_at=opened_at,
        closed_at=closed_at,
        finished_before=finished_before,
        total=total,
        items=items * (total - finished_before) / total,
        worker_cpu_s=worker_close - worker_open,
        pg_cpu_s=PostgresCpu.seconds_between(pg_open, pg_close, exclude=[me]),
    )


def _wait(deadline: float, children: Sequence[Child], what: str) -> None:
    if time.monotonic() > deadline:
        raise DrainTimeout(f"timed out waiting for {what}")
    _check_alive(children)
    time.sleep(POLL_SECONDS)
