"""The orphan rescuer: tasks EXECUTING past their lease go back to the queue.

A task is an orphan when its worker died or hung (SIGKILL, OOM, a stalled
event loop) and its lease ran out on the database's clock. Every worker runs a
rescuer; `run_once()` moves every orphan, in batches, to FAILED_RETRYING with
a backoff, or to the dead-letter queue once its orphan budget is spent, and
says how many went where. The decision (delay, budget) is domain/retry.py's
OrphanPolicy, the same backoff as a delivery failure's. The lock skips rows
locked by anyone else, so rescuers never collide and a task whose worker is
completing it right now is left to that worker.

The rescuer never touches a task whose lease still runs, and never decides
from the worker's clock: expiry is the database's judgement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg.rows import DictRow

from goodfellaz17.db.repository import Repository
from goodfellaz17.db.transient import retrying_transient
from goodfellaz17.domain.retry import OrphanPolicy
from goodfellaz17.domain.states import TaskStatus
from goodfellaz17.worker.counters import BoundMetrics, WorkerCounters

RESCUE_BATCH = 500


@dataclass(frozen=True, slots=True)
class RescueResult:
    """What one rescue round did."""

    retried: int = 0
    dead_lettered: int = 0

    @property
    def total(self) -> int:
        return self.retried + self.dead_lettered


class OrphanRescuer:
    def __init__(
        self,
        *,
        repo: Repository,
        policy: OrphanPolicy,
        counters: WorkerCounters,
        metrics: BoundMetrics,
        on_rescued: Callable[[], None],
        log: Any,
    ) -> None:
        self._repo = repo
        self._policy = policy
        self._counters = counters
        self._m = metrics
        self._on_rescued = on_rescued
        self._log = log

    async def run_once(self) -> RescueResult:
        """Rescue every orphan there is now, a batch per transaction."""
        retried = dead_lettered = 0
        while True:
            rows = await self._rescue_batch()
            for row in rows:
                if self._count_rescued(row) == TaskStatus.FAILED_PERMANENT:
                    dead_lettered += 1
                else:
                    retried += 1
            if len(rows) < RESCUE_BATCH:
                break
        result = RescueResult(retried=retried, dead_lettered=dead_lettered)
        if result.total:
            self._on_rescued()  # they may be due now
        return result

    async def _rescue_batch(self) -> list[DictRow]:
        """The one place the rescue statements run: lock the expired claims,
        decide each one with the policy, apply the decisions; one transaction."""
        async for attempt in retrying_transient():  # a task may move meanwhile
            with attempt:
                async with self._repo.transaction() as conn:
                    orphans = await self._repo.task_lock_orphans(conn, limit=RESCUE_BATCH)
                    rescues = self._policy.rescue_all(orphans)
                    return await self._repo.task_rescue_orphans(conn, rescues)
        raise AssertionError("retrying_transient reraises")  # pragma: no cover

    def _count_rescued(self, row: DictRow) -> str:
        c, m = self._counters, self._m
        c.recovered_orphans += 1
        m.orphans.inc()
        status: str = row["status"]
        if status == TaskStatus.FAILED_PERMANENT:
            c.failed += 1
            m.dead_lettered.inc()
            m.failed_units.inc(row["quantity"])
        else:
            c.retries += 1
            m.retries.inc()
        self._log.warning(
            "Recovering orphaned task",
            order_id=str(row["order_id"]),
            task_id=str(row["id"]),
            # The attempt its worker lost (the rescue refunds it: a crash is
            # not a delivery failure), and how often it has been orphaned.
            attempt=row["attempts"] + 1,
            orphanings=row["orphanings"],
            node=row["node_identifier"],
            lost_by=row["lease_owner"],
            new_status=status,
        )
        return status
