"""What the ops console shows: read-only views over the fleet and its orders.

The console's pages and the partials they refresh every few seconds are all
built from these functions, so each must stay cheap: a handful of statements
that walk partial indexes, never the whole history of tasks. They only read:
every change goes through the same services as the admin API (operations,
chaos, nodes), and the invariant view here reads `v_order_invariants`
without writing to `invariant_check_log` (a page refresh is not a check an
operator ran).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.states import OrderStatus, TaskStatus
from goodfellaz17.errors import NotFound
from goodfellaz17.services import capacity, orders, progress
from goodfellaz17.services.capacity import Capacity
from goodfellaz17.services.invariants import InvariantCheck, describe_checks
from goodfellaz17.services.progress import FailedTasks, OrderProgress
from goodfellaz17.settings import Settings

STUCK_AFTER_SECONDS = 2 * 3600.0  # the runbook's "orders stuck over 2 hours"
CHART_MINUTES = 60
ORDER_PAGE_SIZE = 50
DEAD_LETTERS_SHOWN = 100
ACTIONS_SHOWN = 20
# The contract's paging thresholds, so the console colours what pages someone.
DEAD_LETTER_PAGE = 50
DEAD_LETTER_P1 = 500


@dataclass(frozen=True, slots=True)
class InvariantHealth:
    """The latest periodic global check, as the overview shows it."""

    checked: bool
    passed: bool | None  # None: never checked
    violations: int
    checked_at: datetime | None
    age_seconds: float | None


@dataclass(frozen=True, slots=True)
class FleetOverview:
    units_per_minute: int  # over the last 5 minutes
    units_last_5m: int
    units_last_hour: int
    tasks: dict[str, int]  # tasks per status
    dead_letter_tasks: int
    dead_letter_units: int
    dead_letter_level: str  # ok, page or p1: the contract's thresholds
    orders_total: int
    orders_open: int
    orders_stuck: int
    workers_alive: int
    workers_stale: int
    nodes_healthy: int
    nodes_total: int
    capacity: Capacity
    invariants: InvariantHealth


@dataclass(frozen=True, slots=True)
class MinuteUnits:
    minute: datetime
    units: int


@dataclass(frozen=True, slots=True)
class OrderSummary:
    """An order as a list row shows it: shares for the progress bar, age,
    and the runbook's stuck flag (PROCESSING for over 2 hours)."""

    id: uuid.UUID
    status: str
    target: str
    backend: str
    quantity: int
    delivered: int
    dead_lettered: int
    remaining: int
    task_count: int
    created_at: datetime
    age_seconds: float
    stuck: bool


@dataclass(frozen=True, slots=True)
class OrderSummaries:
    """One page of the order list, and the cursor of the next (older) one."""

    orders: list[OrderSummary]
    next_cursor: str | None
    status: str | None


@dataclass(frozen=True, slots=True)
class OrderInvariants:
    passed: bool
    checks: list[InvariantCheck]


@dataclass(frozen=True, slots=True)
class OperatorActionEntry:
    id: int
    action: str
    actor: str
    details: dict[str, Any]  # as recorded: tasks, units, statusBefore, statusAfter, force
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OrderDetail:
    order: OrderSummary
    progress: OrderProgress
    dead_letters: FailedTasks
    invariants: OrderInvariants
    actions: list[OperatorActionEntry]  # the latest first
    started_at: datetime | None
    completed_at: datetime | None


def _int(value: Any) -> int:
    return int(value or 0)


async def fleet_overview(repo: Repository, settings: Settings) -> FleetOverview:
    """The overview's figures: delivery rate, tasks by state, dead letters,
    workers, nodes, capacity and the latest global invariant check."""
    row = await repo.console_overview(stale_after_seconds=settings.worker_stale_after_seconds)
    cap = await capacity.capacity(repo, settings)
    tasks = {
        TaskStatus.PENDING.value: _int(row["pending"]),
        TaskStatus.EXECUTING.value: _int(row["executing"]),
        TaskStatus.FAILED_RETRYING.value: _int(row["retrying"]),
        TaskStatus.FAILED_PERMANENT.value: _int(row["dead_letter"]),
        TaskStatus.COMPLETED.value: max(_int(row["completed"]), 0),
    }
    dead = tasks[TaskStatus.FAILED_PERMANENT.value]
    checked_at = row["invariant_checked_at"]
    return FleetOverview(
        units_per_minute=round(_int(row["units_last_5m"]) / 5),
        units_last_5m=_int(row["units_last_5m"]),
        units_last_hour=_int(row["units_last_hour"]),
        tasks=tasks,
        dead_letter_tasks=dead,
        dead_letter_units=_int(row["dead_letter_units"]),
        dead_letter_level=(
            "p1" if dead > DEAD_LETTER_P1 else "page" if dead > DEAD_LETTER_PAGE else "ok"
        ),
        orders_total=_int(row["orders_total"]),
        orders_open=_int(row["orders_open"]),
        orders_stuck=_int(row["orders_processing_over_2h"]),
        workers_alive=_int(row["workers_alive"]),
        workers_stale=_int(row["workers_stale"]),
        nodes_healthy=_int(row["nodes_healthy"]),
        nodes_total=_int(row["nodes_total"]),
        capacity=cap,
        invariants=InvariantHealth(
            checked=checked_at is not None,
            passed=bool(row["invariant_passed"]) if checked_at is not None else None,
            violations=_int(row["invariant_violations"]),
            checked_at=checked_at,
            age_seconds=(
                (row["db_now"] - checked_at).total_seconds() if checked_at is not None else None
            ),
        ),
    )


async def delivered_per_minute(repo: Repository, minutes: int = CHART_MINUTES) -> list[MinuteUnits]:
    """Units delivered in each of the last `minutes` minutes, oldest first."""
    rows = await repo.task_delivered_per_minute(minutes=minutes)
    return [MinuteUnits(minute=r["minute"], units=int(r["units"])) for r in rows]


def order_summary(order: orders.Order, now: datetime) -> OrderSummary:
    age = (now - order.created_at).total_seconds()
    return OrderSummary(
        id=order.id,
        status=order.status,
        target=order.target,
        backend=order.backend,
        quantity=order.quantity,
        delivered=order.delivered,
        dead_lettered=order.failed_permanent_plays,
        remaining=max(order.remaining, 0),
        task_count=order.task_count,
        created_at=order.created_at,
        age_seconds=age,
        stuck=order.status == OrderStatus.PROCESSING and age > STUCK_AFTER_SECONDS,
    )


async def order_page(
    repo: Repository, *, status: str | None, cursor: str | None, limit: int = ORDER_PAGE_SIZE
) -> OrderSummaries:
    listing = await orders.list_orders(repo, status=status, limit=limit, cursor=cursor)
    now = datetime.now(UTC)
    return OrderSummaries(
        orders=[order_summary(o, now) for o in listing.orders],
        next_cursor=listing.next_cursor,
        status=status,
    )


async def order_invariants(repo: Repository, order_id: uuid.UUID) -> OrderInvariants:
    """The order's invariant checks as they stand (read from the view, not logged)."""
    async with repo.connection() as conn:
        rows = await repo.invariant_order_checks(conn, order_id)
    if not rows:
        raise NotFound(f"order {order_id} not found", field="orderId")
    checks = describe_checks(rows)
    return OrderInvariants(passed=all(c.passed for c in checks), checks=checks)


async def order_detail(repo: Repository, order_id: uuid.UUID) -> OrderDetail:
    """Everything the order page shows: the order, its progress and task
    distribution, its dead letters, its invariants and recent operator actions."""
    order = await orders.get_order(repo, order_id)
    prog = await progress.order_progress(repo, order_id)
    dead = await progress.failed_tasks(repo, order_id, limit=DEAD_LETTERS_SHOWN)
    inv = await order_invariants(repo, order_id)
    actions = await repo.operator_action_list_for_order(order_id, limit=ACTIONS_SHOWN)
    return OrderDetail(
        order=order_summary(order, datetime.now(UTC)),
        progress=prog,
        dead_letters=dead,
        invariants=inv,
        actions=[
            OperatorActionEntry(
                id=a["id"],
                action=a["action"],
                actor=a["actor"],
                details=a["details"],
                created_at=a["created_at"],
            )
            for a in actions
        ],
        started_at=order.started_at,
        completed_at=order.completed_at,
    )
