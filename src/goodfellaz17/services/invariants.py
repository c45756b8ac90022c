"""Invariant checks for one order or all orders, logged to invariant_check_log.

The checks are defined once, in the `v_order_invariants` view; this module
runs them, returns typed results and records that the check happened, and who
asked (`CheckSource`). The InvariantViolation and InvariantCheckStale alerts
read only full global checks by the periodic monitor or an operator's CLI:
nothing asked for over the API, by any key, changes what they see. Checks
asked for over the API write a bounded number of rows: a recent global check
is reused, a repeated single-order or orphan check with the same outcome is
not logged again, and a failing global check logs at most
MAX_ORDER_ROWS_PER_GLOBAL_CHECK orders. The
JSON it stores in invariant_check_log (`checks`, `violations`) keeps its own
field names: the log query and operators' SQL read them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from psycopg.types.json import Jsonb

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.invariants import CHECKS
from goodfellaz17.errors import InvalidInput, NotFound

ORPHAN_CHECK = "no_task_executing_past_its_lease"
MAX_ORDER_ROWS_PER_GLOBAL_CHECK = 100
# Verified orders the global check reads again each time, oldest check first:
# at one check a minute that is 1.44 M a day, so every retained order (10,000
# a day for 30 days: 300,000) is read again every few hours, and even a task
# changed with the triggers off (which leaves its order's row as it was) is
# found.
RECHECK_PER_GLOBAL_CHECK = 1000
# pg_advisory_xact_lock key of a global check asked for over the API.
GLOBAL_CHECK_LOCK_ID = 0x6766_696E_7663  # "gfinvc": arbitrary, fixed


class CheckSource(StrEnum):
    """Who ran a check (invariant_check_log.source)."""

    MONITOR = "MONITOR"  # the API processes' periodic check: what the alerts read
    CLI = "CLI"  # an operator at a shell: read by the alerts too
    API = "API"  # asked for over HTTP, by any key: never read by the alerts


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


async def check_order(
    repo: Repository,
    order_id: uuid.UUID,
    *,
    source: CheckSource = CheckSource.API,
    dedupe_seconds: float = 0,
) -> OrderCheck:
    """Check one order, live. Logged unless the order's latest logged check
    within `dedupe_seconds` had the same outcome."""
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
            source=source.value,
            passed=passed,
            failed_checks=[c.name for c in checks if not c.passed],
            checks=Jsonb([asdict(c) for c in checks]),
            duration_ms=duration_ms,
            dedupe_seconds=dedupe_seconds,
        )
    return OrderCheck(order_id, passed, checks, checked_at, round(duration_ms, 3))


async def check_all(repo: Repository, *, source: CheckSource = CheckSource.API) -> GlobalCheck:
    """Every order not yet found exact, every check, in one statement; always run."""
    async with repo.transaction() as conn:
        return await _run_global_check(repo, conn, source)


async def recent_global_check(repo: Repository, *, max_age_seconds: float) -> GlobalCheck:
    """The latest global check if at most `max_age_seconds` old, else a new
    one (logged as API). Concurrent callers wait for the one running and
    reuse its result, so however often it is asked for, the API runs at most
    one global check per `max_age_seconds`."""
    async with repo.transaction() as conn:
        await repo.invariant_global_lock(conn, lock_id=GLOBAL_CHECK_LOCK_ID)
        latest = await repo.invariant_global_latest(conn, max_age_seconds=max_age_seconds)
        if latest is not None:
            return _logged_global_result(latest)
        return await _run_global_check(repo, conn, CheckSource.API)


async def _run_global_check(repo: Repository, conn: AsyncConn, source: CheckSource) -> GlobalCheck:
    started = time.perf_counter()
    summary = await repo.invariant_global_summary(conn, recheck=RECHECK_PER_GLOBAL_CHECK)
    violations = [
        Violation(
            order_id=uuid.UUID(str(v["order_id"])),
            check=v["check_name"],
            expected=v["expected"],
            actual=v["actual"],
        )
        for v in summary["violations"]
    ]
    violation_count = int(summary["violation_count"])
    duration_ms = (time.perf_counter() - started) * 1000
    passed = not violations
    checked_at = await repo.invariant_log_global(
        conn,
        source=source.value,
        passed=passed,
        violations=Jsonb([v.as_logged() for v in violations]),
        orders_checked=summary["orders_checked"],
        violation_count=violation_count,
        duration_ms=duration_ms,
        max_order_rows=MAX_ORDER_ROWS_PER_GLOBAL_CHECK,
    )
    return GlobalCheck(
        passed=passed,
        orders_checked=summary["orders_checked"],
        violation_count=violation_count,
        violations=violations,
        checked_at=checked_at,
        duration_ms=round(duration_ms, 3),
    )


def _logged_global_result(row: Mapping[str, Any]) -> GlobalCheck:
    """A logged global check, answered as if it had just run."""
    violations = (
        []
        if row["passed"]
        else [
            Violation(
                order_id=uuid.UUID(str(v["orderId"])),
                check=v["check"],
                expected=v["expected"],
                actual=v["actual"],
            )
            for v in row["checks"]
        ]
    )
    count = row["violation_count"]
    return GlobalCheck(
        passed=bool(row["passed"]),
        orders_checked=row["orders_checked"],
        violation_count=len(violations) if count is None else int(count),
        violations=violations,
        checked_at=row["check_timestamp"],
        duration_ms=round(float(row["duration_ms"] or 0.0), 3),
    )


async def check_orphans(
    repo: Repository,
    *,
    limit: int = 1000,
    source: CheckSource = CheckSource.API,
    dedupe_seconds: float = 0,
) -> OrphanCheck:
    """Tasks EXECUTING past their lease, oldest first (at most `limit` listed).
    Logged under scope ORPHANS, unless the latest orphan check within
    `dedupe_seconds` had the same outcome."""
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
        checked_at = await repo.invariant_log_orphans(
            conn,
            source=source.value,
            dedupe_seconds=dedupe_seconds,
            passed=passed,
            failed_checks=[] if passed else [ORPHAN_CHECK],
            checks=Jsonb(
                [{"name": ORPHAN_CHECK, "expected": 0, "actual": count, "passed": passed}]
            ),
            orders_checked=len({o.order_id for o in orphans}),
            duration_ms=duration_ms,
        )
    return OrphanCheck(passed, ORPHAN_CHECK, count, orphans, checked_at, round(duration_ms, 3))
