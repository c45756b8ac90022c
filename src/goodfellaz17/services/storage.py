"""Storage maintenance: day partitions made ahead of time, dropped by retention.

Finished orders and their tasks live in one partition pair per day of order
creation (db/schema.sql, "Storage"). Every process that talks to the
database runs `StorageMaintenance.run_once()` periodically; each step is led
by whoever takes an advisory lock first, so exactly one replica does it and
any can take over. A run:

1. makes sure the partitions of yesterday to `partition_days_ahead` days
   ahead exist (a missing one never fails an order: it lands in a DEFAULT
   partition and is moved when the day's partitions are made);
2. drops every day whose orders are all COMPLETED and have been for the
   whole retention period (with `retention_require_archive`, only days that
   `goodfellaz17 archive` has exported);
3. deletes, in bounded batches, what lives outside the day partitions past
   the retention period: finished orders from before storage v2 (their ids
   are not time-ordered, so they sit in the DEFAULT partitions), invariant
   checks, operator actions, idempotency keys and stopped workers.

DDL takes locks that every query of the table waits behind, so each step is
its own short transaction with a lock timeout: behind a long transaction a
step gives up and the next run tries again, instead of stalling the fleet.

It must never delete an open order, a task of one, or anything younger than
the retention period.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

import psycopg
import psycopg_pool

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository import Repository
from goodfellaz17.errors import InvalidInput
from goodfellaz17.logs import get_logger
from goodfellaz17.metrics import StorageMetrics
from goodfellaz17.periodic import periodic
from goodfellaz17.settings import Settings

log = get_logger(__name__)

MAINTENANCE_LOCK_ID = 0x6F6F_6466_6C7B  # one above the migration lock
MAINTENANCE_JITTER = 0.2  # replicas drift apart
LOCK_TIMEOUT = "2s"
PURGE_BATCH = 5000
PURGE_BATCHES_PER_RUN = 20


@dataclass(frozen=True, slots=True)
class StorageDay:
    day: date
    created_at: datetime
    archived_at: datetime | None
    blocker: str | None  # None: nothing keeps it, it may be dropped
    bytes: int


@dataclass(slots=True)
class MaintenanceResult:
    """What one run did; `led` is False when another replica held the lock."""

    led: bool = False
    days_created: int = 0
    days_dropped: list[date] = field(default_factory=list)
    days_kept: dict[date, str] = field(default_factory=dict)
    purged: dict[str, int] = field(default_factory=dict)
    duration_ms: float = 0.0


def today_utc() -> date:
    return datetime.now(UTC).date()


class StorageMaintenance:
    def __init__(
        self, repo: Repository, settings: Settings, metrics: StorageMetrics | None = None
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.metrics = metrics

    async def run(self) -> None:
        """Now, then every GOODFELLAZ17_MAINTENANCE_INTERVAL_SECONDS, until cancelled."""
        await periodic(
            self.run_once,
            self.settings.maintenance_interval_seconds,
            name="storage-maintenance",
            jitter=MAINTENANCE_JITTER,
            outages=(psycopg.OperationalError, psycopg_pool.PoolTimeout),
            outage_event="storage maintenance skipped: database unavailable",
            crash_event="storage maintenance failed",
            log=log,
        )

    async def run_once(self) -> MaintenanceResult:
        started = time.perf_counter()
        result = MaintenanceResult()
        try:
            await self._make_days(result)
            await self._drop_expired_days(result)
            await self._purge(result)
        except Exception:
            self._count("failed")
            raise
        result.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        self._count("done" if result.led else "skipped")
        if self.metrics is not None:
            self.metrics.days_created_total.inc(result.days_created)
            self.metrics.days_dropped_total.inc(len(result.days_dropped))
            for table, rows in result.purged.items():
                if rows:
                    self.metrics.rows_purged_total.labels(table=table).inc(rows)
        if result.led:
            log.info(
                "storage maintenance run",
                days_created=result.days_created,
                days_dropped=[d.isoformat() for d in result.days_dropped],
                days_kept={d.isoformat(): why for d, why in result.days_kept.items()},
                purged=result.purged,
                duration_ms=result.duration_ms,
            )
        return result

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.runs_total.labels(outcome=outcome).inc()

    async def _led_step(self, conn: AsyncConn) -> bool:
        """Inside a transaction: True when this replica leads the step."""
        await self.repo.storage_lock_timeout(conn, lock_timeout=LOCK_TIMEOUT)
        return await self.repo.storage_leader_lock(conn, lock_id=MAINTENANCE_LOCK_ID)

    async def _make_days(self, result: MaintenanceResult) -> None:
        today = today_utc()
        async with self.repo.transaction() as conn:
            if not await self._led_step(conn):
                return
            result.led = True
            result.days_created = await self.repo.storage_ensure_days(
                conn,
                from_day=today - timedelta(days=1),
                to_day=today + timedelta(days=self.settings.partition_days_ahead),
            )

    async def _drop_expired_days(self, result: MaintenanceResult) -> None:
        days = await self.list_days()
        for day in days:
            if day.blocker is not None:
                if day.blocker != "within the retention period":
                    result.days_kept[day.day] = day.blocker
                continue
            if self.settings.retention_require_archive and day.archived_at is None:
                result.days_kept[day.day] = "not archived yet"
                continue
            try:
                async with self.repo.transaction() as conn:
                    if not await self._led_step(conn):
                        return
                    result.led = True
                    dropped = await self.repo.storage_drop_day(
                        conn,
                        day=day.day,
                        retention_days=self.settings.retention_days,
                        require_archive=self.settings.retention_require_archive,
                    )
            except psycopg.errors.LockNotAvailable:
                result.days_kept[day.day] = "its tables were busy; next run"
                continue
            if dropped:
                result.days_dropped.append(day.day)

    async def _purge(self, result: MaintenanceResult) -> None:
        totals = {
            "orders": 0,
            "order_tasks": 0,
            "invariant_check_log": 0,
            "operator_actions": 0,
            "order_idempotency_keys": 0,
            "workers": 0,
        }
        for _ in range(PURGE_BATCHES_PER_RUN):
            async with self.repo.transaction() as conn:
                if not await self._led_step(conn):
                    break
                result.led = True
                legacy = await self.repo.storage_purge_default(
                    conn, retention_days=self.settings.retention_days, limit=PURGE_BATCH
                )
                logs = await self.repo.storage_purge_logs(
                    conn, retention_days=self.settings.retention_days, limit=PURGE_BATCH
                )
            totals["orders"] += legacy["orders"]
            totals["order_tasks"] += legacy["tasks"]
            totals["invariant_check_log"] += logs["invariant_checks"]
            totals["operator_actions"] += logs["operator_actions"]
            totals["order_idempotency_keys"] += logs["idempotency_keys"]
            totals["workers"] += logs["workers"]
            if max(legacy["orders"], *(logs[k] for k in logs)) < PURGE_BATCH:
                break
        result.purged = {k: v for k, v in totals.items() if v}

    async def list_days(self) -> list[StorageDay]:
        rows = await self.repo.storage_day_list(retention_days=self.settings.retention_days)
        return [
            StorageDay(
                day=r["day"],
                created_at=r["created_at"],
                archived_at=r["archived_at"],
                blocker=r["blocker"],
                bytes=int(r["bytes"]),
            )
            for r in rows
        ]


# ---------------------------------------------------------------- the archive

ARCHIVE_FORMATS = ("jsonl", "csv")
CSV_ORDER_COLUMNS = (
    "id",
    "status",
    "quantity",
    "delivered",
    "failed_permanent_plays",
    "target",
    "backend",
    "task_count",
    "idempotency_key",
    "created_at",
    "started_at",
    "completed_at",
)
CSV_TASK_COLUMNS = (
    "id",
    "seq",
    "quantity",
    "status",
    "attempts",
    "orphanings",
    "lastError",
    "executedAt",
    "nodeId",
)


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    days: list[date]
    orders: int
    tasks: int
    dropped: list[date]


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _csv_rows(order: dict[str, Any]) -> Iterator[list[Any]]:
    head = [_json_default(order[c]) if order[c] is not None else "" for c in CSV_ORDER_COLUMNS]
    for task in order["tasks"]:
        yield head + ["" if task[c] is None else task[c] for c in CSV_TASK_COLUMNS]


async def archive(
    repo: Repository, settings: Settings, out: IO[str], *, fmt: str, drop: bool
) -> ArchiveResult:
    """Write every day that retention may drop and that is not archived yet to
    `out` (JSON lines: one order a line with its tasks; CSV: one task a row,
    its order's columns first), mark those days archived, and with `drop`
    drop them right away (otherwise the maintenance leader does)."""
    if fmt not in ARCHIVE_FORMATS:
        raise InvalidInput(f"format must be one of: {', '.join(ARCHIVE_FORMATS)}", field="format")
    maintenance = StorageMaintenance(repo, settings)
    days = [d.day for d in await maintenance.list_days() if d.blocker is None]
    writer = None
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(
            [f"order_{c}" for c in CSV_ORDER_COLUMNS] + [f"task_{c}" for c in CSV_TASK_COLUMNS]
        )
    orders = tasks = 0
    archived: list[date] = []
    for day in days:
        async with repo.transaction() as conn:
            rows = await repo.storage_day_orders(conn, day=day)
            for row in rows:
                order = dict(row)
                orders += 1
                tasks += len(order["tasks"])
                if writer is not None:
                    writer.writerows(_csv_rows(order))
                else:
                    out.write(json.dumps(order, default=_json_default) + "\n")
            out.flush()
            await repo.storage_day_mark_archived(conn, day=day)
        archived.append(day)
    dropped: list[date] = []
    if drop:
        for day in archived:
            async with repo.transaction() as conn:
                await repo.storage_lock_timeout(conn, lock_timeout=LOCK_TIMEOUT)
                if await repo.storage_drop_day(
                    conn,
                    day=day,
                    retention_days=settings.retention_days,
                    require_archive=True,
                ):
                    dropped.append(day)
    log.info(
        "archive written",
        days=[d.isoformat() for d in archived],
        orders=orders,
        tasks=tasks,
        dropped=[d.isoformat() for d in dropped],
    )
    return ArchiveResult(days=archived, orders=orders, tasks=tasks, dropped=dropped)
