"""How far along an order is, and what it dead-lettered: read-only views
shared by the admin API, the console and the CLI, as typed results."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.estimates import eta_seconds, percent, recent_rate
from goodfellaz17.domain.states import TaskStatus
from goodfellaz17.errors import InvalidInput, NotFound

# The rate behind the ETA is measured over this recent window, so a backlog
# that cleared an hour ago does not make a stalled order look fast.
RATE_WINDOW_SECONDS = 300.0
MAX_FAILED_TASKS = 1000


@dataclass(frozen=True, slots=True)
class TaskTally:
    tasks: int
    units: int


@dataclass(frozen=True, slots=True)
class OrderProgress:
    order_id: uuid.UUID
    status: str
    quantity: int
    delivered: int
    failed_permanent_plays: int
    remaining: int
    task_count: int
    tasks: dict[str, TaskTally]  # every task status, in TaskStatus order
    percent_complete: float
    percent_settled: float  # delivered + dead-lettered
    units_per_second: float
    units_per_hour: int
    rate_window_seconds: float
    eta_seconds: float | None  # None while nothing is being delivered
    age_seconds: float
    running_seconds: float | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    def tally(self, *statuses: str) -> TaskTally:
        """Tasks and units in these statuses together."""
        return TaskTally(
            sum(self.tasks[s].tasks for s in statuses), sum(self.tasks[s].units for s in statuses)
        )


@dataclass(frozen=True, slots=True)
class FailedTask:
    task_id: uuid.UUID
    seq: int
    quantity: int
    attempts: int
    orphanings: int
    last_error: str | None
    executed_at: datetime | None
    node_id: int | None


@dataclass(frozen=True, slots=True)
class FailedTasks:
    """An order's dead letters: how many in all, and the latest `limit`."""

    order_id: uuid.UUID
    count: int
    units: int
    tasks: list[FailedTask]


async def order_progress(repo: Repository, order_id: uuid.UUID) -> OrderProgress:
    row = await repo.order_progress(order_id, window_seconds=RATE_WINDOW_SECONDS)
    if row is None:
        raise NotFound(f"order {order_id} not found", field="orderId")
    by_status = row["by_status"]
    statuses = {
        s.value: TaskTally(
            tasks=int(by_status.get(s.value, {}).get("tasks", 0)),
            units=int(by_status.get(s.value, {}).get("units", 0)),
        )
        for s in TaskStatus
    }
    quantity, delivered = row["quantity"], row["delivered"]
    dead = row["failed_permanent_plays"]
    open_units = quantity - delivered - dead
    now = row["db_now"]
    running = (now - row["started_at"]).total_seconds() if row["started_at"] else None
    rate = recent_rate(int(row["recent_units"]), RATE_WINDOW_SECONDS, running)
    return OrderProgress(
        order_id=row["id"],
        status=row["status"],
        quantity=quantity,
        delivered=delivered,
        failed_permanent_plays=dead,
        remaining=open_units,
        task_count=row["task_count"],
        tasks=statuses,
        percent_complete=percent(delivered, quantity),
        percent_settled=percent(delivered + dead, quantity),
        units_per_second=round(rate, 3),
        units_per_hour=round(rate * 3600),
        rate_window_seconds=RATE_WINDOW_SECONDS,
        eta_seconds=eta_seconds(open_units, rate),
        age_seconds=round((now - row["created_at"]).total_seconds(), 1),
        running_seconds=round(running, 1) if running is not None else None,
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
    )


async def failed_tasks(repo: Repository, order_id: uuid.UUID, *, limit: int = 100) -> FailedTasks:
    if not 1 <= limit <= MAX_FAILED_TASKS:
        raise InvalidInput(f"limit must be between 1 and {MAX_FAILED_TASKS}", field="limit")
    rows = await repo.order_failed_tasks(order_id, limit=limit)
    if not rows and await repo.order_get(order_id) is None:
        raise NotFound(f"order {order_id} not found", field="orderId")
    return FailedTasks(
        order_id=order_id,
        count=int(rows[0]["total"]) if rows else 0,
        units=int(rows[0]["total_units"]) if rows else 0,
        tasks=[
            FailedTask(
                task_id=r["id"],
                seq=r["seq"],
                quantity=r["quantity"],
                attempts=r["attempts"],
                orphanings=r["orphanings"],
                last_error=r["last_error"],
                executed_at=r["executed_at"],
                node_id=r["node_id"],
            )
            for r in rows
        ],
    )
