"""Worker status: this process's worker when it runs one, else the fleet
totals from the `workers` table; always the list of workers with their
liveness (ALIVE / STALE / STOPPED by heartbeat age)."""

from __future__ import annotations

from typing import Any

from goodfellaz17.db.repository import Repository
from goodfellaz17.settings import Settings

WORKER_LIST_LIMIT = 100

_COUNTERS = {
    "totalProcessed": "total_processed",
    "totalCompleted": "total_completed",
    "totalFailed": "total_failed",
    "totalRetries": "total_retries",
    "recoveredOrphans": "recovered_orphans",
}


def _worker_entry(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "hostname": row["hostname"],
        "pid": row["pid"],
        "status": row["status"],
        "state": row["state"],
        "alive": row["state"] == "ALIVE",
        "startedAt": row["started_at"],
        "lastHeartbeatAt": row["last_heartbeat_at"],
        "secondsSinceHeartbeat": round(float(row["seconds_since_heartbeat"]), 1),
        "stoppedAt": row["stopped_at"],
        **{key: int(row[column]) for key, column in _COUNTERS.items()},
    }


async def worker_status(
    repo: Repository, settings: Settings, *, local: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`local` is the in-process worker's own status(), when there is one."""
    stale_after = settings.worker_stale_after_seconds
    totals = await repo.worker_totals(stale_after_seconds=stale_after)
    rows = await repo.worker_list(stale_after_seconds=stale_after, limit=WORKER_LIST_LIMIT)
    fleet = {
        "workersAlive": int(totals["alive"]),
        "workersStale": int(totals["stale"]),
        "workersKnown": int(totals["workers"]),
        "staleAfterSeconds": stale_after,
        "workers": [_worker_entry(r) for r in rows],
    }
    if local is not None:
        return {"scope": "process", **local, **fleet}
    return {
        "scope": "fleet",
        "workerId": None,
        **{key: int(totals[column]) for key, column in _COUNTERS.items()},
        "isRunning": int(totals["alive"]) > 0,
        **fleet,
    }
