"""Invariant checks for one order or all orders, logged to invariant_check_log.

The checks are defined once, in the `v_order_invariants` view; this module
runs them, returns typed results and records that the check happened. The
JSON it stores in invariant_check_log (`checks`, `violations`) keeps its own
field names: the log query and operators' SQL read them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.invariants import CHECKS
from goodfellaz17.errors import InvalidInput, NotFound

ORPHAN_CHECK = "no_task_executing_past_its_lease"


@dataclass(frozen=True, slots=True)
class InvariantCheck:
    name: str
    description: str
    expected: int
    actual: int
    passed: bool


@dataclass(frozen=True, slots=True)
class OrderCheck:
    order_id: uuid.UUID
    passed: bool
    checks: list[InvariantCheck]
    checked_at: datetime
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Violation:
    order_id: uuid.UUID
    check: str
    expected: int
    actual: int

    def as_logged(self) -> dict[str, Any]:
        """As stored in invariant_check_log.violations (and logged)."""
        return {
            "orderId": str(self.order_id),
            "check": self.check,
            "expected": self.expected,
            "actual": self.actual,
        }


@dataclass(frozen=True, slots=True)
class GlobalCheck:
    passed: bool
    orders_checked: int
    violation_count: int
    violations: list[Violation]  # at most the query's limit; violation_count counts all
    checked_at: datetime
    duration_ms: float


@dataclass(frozen=True, slots=True)
class OrphanTask:
    task_id: uuid.UUID
    order_id: uuid.UUID
    seq: int
    quantity: int
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime
    overdue_seconds: float
    started_at: datetime | None
    node_id: int | None


@dataclass(frozen=True, slots=True)
class OrphanCheck:
    passed: bool
    check: str
    count: int
    orphans: list[OrphanTask]  # oldest first, at most `limit`; count counts all
    checked_at: datetime
    duration_ms: float


def describe_checks(rows: Sequence[Mapping[str, Any]]) -> list[InvariantCheck]:
    """An order's rows of v_order_invariants, each with what it means."""
    return [
        InvariantCheck(
            name=r["check_name"],
            description=CHECKS.get(r["check_name"], ""),
            expected=r["expected"],
            actual=r["actual"],
            passed=bool(r["passed"]),
        )
        for r in rows
    ]


async def check_order(repo: Repository, order_id: uuid.UUID) -> OrderCheck:
    started = time.perf_counter()
    async with repo.transaction() as conn:
        rows = await repo.invariant_order_checks(conn, order_id)
        if not rows:
            raise NotFound(f"order {order_id} not found", field="orderId")
        checks = describe_checks(rows)
        passed = all(c.passed for c in checks)
        duration_ms = (time.perf_counter() - started) * 1000
        checked_at = await repo.invariant_log_order(
            conn,
            order_id=order_id,
            scope="ORDER",
            passed=passed,
            failed_checks=[c.name for c in checks if not c.passed],
            checks=Jsonb([asdict(c) for c in checks]),
            orders_checked=1,
            duration_ms=duration_ms,
        )
    return OrderCheck(order_id, passed, checks, checked_at, round(duration_ms, 3))


async def check_all(repo: Repository) -> GlobalCheck:
    """Every order, every check, in one aggregate statement."""
    started = time.perf_counter()
    async with repo.transaction() as conn:
        summary = await repo.invariant_global_summary(conn)
        violations = [
            Violation(
                order_id=uuid.UUID(str(v["order_id"])),
                check=v["check_name"],
                expected=v["expected"],
                actual=v["actual"],
            )
            for v in summary["violations"]
        ]
        duration_ms = (time.perf_counter() - started) * 1000
        passed = not violations
        checked_at = await repo.invariant_log_global(
            conn,
            passed=passed,
            violations=Jsonb([v.as_logged() for v in violations]),
            orders_checked=summary["orders_checked"],
            duration_ms=duration_ms,
        )
    return GlobalCheck(
        passed=passed,
        orders_checked=summary["orders_checked"],
        violation_count=int(summary["violation_count"]),
        violations=violations,
        checked_at=checked_at,
        duration_ms=round(duration_ms, 3),
    )


async def check_orphans(repo: Repository, *, limit: int = 1000) -> OrphanCheck:
    """Tasks EXECUTING past their lease, oldest first (at most `limit` listed)."""
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit must be between 1 and 10000", field="limit")
    started = time.perf_counter()
    async with repo.transaction() as conn:
        rows = await repo.invariant_orphans(conn, limit=limit)
        orphans = [
            OrphanTask(
                task_id=r["id"],
                order_id=r["order_id"],
                seq=r["seq"],
                quantity=r["quantity"],
                attempts=r["attempts"],
                lease_owner=r["lease_owner"],
                lease_expires_at=r["lease_expires_at"],
                overdue_seconds=round(float(r["overdue_seconds"]), 3),
                started_at=r["started_at"],
                node_id=r["node_id"],
            )
            for r in rows
        ]
        count = int(rows[0]["total"]) if rows else 0
        passed = count == 0
        duration_ms = (time.perf_counter() - started) * 1000
        checked_at = await repo.invariant_log_order(
            conn,
            order_id=None,
            scope="GLOBAL",
            passed=passed,
            failed_checks=[] if passed else [ORPHAN_CHECK],
            checks=Jsonb(
                [{"name": ORPHAN_CHECK, "expected": 0, "actual": count, "passed": passed}]
            ),
            orders_checked=len({o.order_id for o in orphans}),
            duration_ms=duration_ms,
        )
    return OrphanCheck(passed, ORPHAN_CHECK, count, orphans, checked_at, round(duration_ms, 3))
