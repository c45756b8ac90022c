"""Worker status: this process's worker when it runs one, else the fleet
totals from the `workers` table; always the list of workers with their
liveness (ALIVE / STALE / STOPPED by heartbeat age). Read only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from goodfellaz17.db.repository import Repository, Row
from goodfellaz17.settings import Settings

WORKER_LIST_LIMIT = 100


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    """One row of `workers` with its liveness."""

    id: str
    hostname: str
    pid: int
    status: str
    state: str  # ALIVE, STALE (silent past the stale threshold) or STOPPED
    alive: bool
    started_at: datetime
    last_heartbeat_at: datetime
    seconds_since_heartbeat: float
    stopped_at: datetime | None
    total_processed: int
    total_completed: int
    total_failed: int
    total_retries: int
    recovered_orphans: int


@dataclass(frozen=True, slots=True)
class LocalWorker:
    """The in-process worker's own figures."""

    worker_id: str
    total_processed: int
    total_completed: int
    total_failed: int
    total_retries: int
    recovered_orphans: int
    leases_lost: int
    is_running: bool
    in_flight: int
    executing: int
    chaos_active: bool

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> LocalWorker:
        """From the worker's status() (its keys are camelCase)."""
        return cls(
            worker_id=status["workerId"],
            total_processed=status["totalProcessed"],
            total_completed=status["totalCompleted"],
            total_failed=status["totalFailed"],
            total_retries=status["totalRetries"],
            recovered_orphans=status["recoveredOrphans"],
            leases_lost=status["leasesLost"],
            is_running=status["isRunning"],
            in_flight=status["inFlight"],
            executing=status["executing"],
            chaos_active=status["chaosActive"],
        )


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """scope "process": the counters are this process's worker's (and the
    fields only it knows are set); scope "fleet": sums over `workers`."""

    scope: str
    worker_id: str | None
    total_processed: int
    total_completed: int
    total_failed: int
    total_retries: int
    recovered_orphans: int
    is_running: bool
    leases_lost: int | None
    in_flight: int | None
    executing: int | None
    chaos_active: bool | None
    workers_alive: int
    workers_stale: int
    workers_known: int
    stale_after_seconds: float
    workers: list[WorkerEntry]


def _worker_entry(row: Row) -> WorkerEntry:
    return WorkerEntry(
        id=row["id"],
        hostname=row["hostname"],
        pid=row["pid"],
        status=row["status"],
        state=row["state"],
        alive=row["state"] == "ALIVE",
        started_at=row["started_at"],
        last_heartbeat_at=row["last_heartbeat_at"],
        seconds_since_heartbeat=round(float(row["seconds_since_heartbeat"]), 1),
        stopped_at=row["stopped_at"],
        total_processed=int(row["total_processed"]),
        total_completed=int(row["total_completed"]),
        total_failed=int(row["total_failed"]),
        total_retries=int(row["total_retries"]),
        recovered_orphans=int(row["recovered_orphans"]),
    )


async def worker_status(
    repo: Repository, settings: Settings, *, local: LocalWorker | None = None
) -> WorkerStatus:
    """`local` is the in-process worker's own figures, when there is one."""
    stale_after = settings.worker_stale_after_seconds
    totals = await repo.worker_totals(stale_after_seconds=stale_after)
    rows = await repo.worker_list(stale_after_seconds=stale_after, limit=WORKER_LIST_LIMIT)
    fleet = WorkerStatus(
        scope="fleet",
        worker_id=None,
        total_processed=int(totals["total_processed"]),
        total_completed=int(totals["total_completed"]),
        total_failed=int(totals["total_failed"]),
        total_retries=int(totals["total_retries"]),
        recovered_orphans=int(totals["recovered_orphans"]),
        is_running=int(totals["alive"]) > 0,
        leases_lost=None,
        in_flight=None,
        executing=None,
        chaos_active=None,
        workers_alive=int(totals["alive"]),
        workers_stale=int(totals["stale"]),
        workers_known=int(totals["workers"]),
        stale_after_seconds=stale_after,
        workers=[_worker_entry(r) for r in rows],
    )
    if local is None:
        return fleet
    return replace(fleet, scope="process", **asdict(local))
