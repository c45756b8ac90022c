"""The lease keeper: heartbeats, and leases extended while deliveries run long.

Every heartbeat the worker writes its totals to `workers` and extends, fenced
by token, the lease of every claim held for more than a third of the lease; a
claim missing from the result was rescued or re-claimed elsewhere, so the
worker stops counting on it.

The new expiry is always the database's now() plus the lease: the worker's
own clock only measures how long it has held a claim (monotonic), never when
a lease ends, so workers with skewed clocks still agree.
"""

from __future__ import annotations

import time
from typing import Any

from goodfellaz17.db.repository import Repository
from goodfellaz17.settings import Settings
from goodfellaz17.worker.claims import ClaimLedger
from goodfellaz17.worker.counters import WorkerCounters
from goodfellaz17.worker.outcomes import task_fields


class LeaseKeeper:
    def __init__(
        self,
        *,
        repo: Repository,
        settings: Settings,
        worker_id: str,
        ledger: ClaimLedger,
        counters: WorkerCounters,
        log: Any,
    ) -> None:
        self._repo = repo
        self._lease_seconds = settings.task_lease_seconds
        self._worker_id = worker_id
        self._ledger = ledger
        self._counters = counters
        self._log = log

    async def extend_leases(self) -> None:
        """Extend the leases of claims held for more than a third of the lease."""
        lease = self._lease_seconds
        old = self._ledger.held_since(time.monotonic() - lease / 3)
        if not old:
            return
        claims = [(h.task.id, h.task.fencing_token) for h in old]
        async with self._repo.connection() as conn:
            kept = await self._repo.task_extend_leases(conn, claims, lease)
        now = time.monotonic()
        for held in old:
            if held.task.id in kept:
                held.claimed_at = now
            else:
                self._ledger.forget(held.task.id)
                self._counters.leases_lost += 1
                self._log.warning("lease lost while executing", **task_fields(held.task))

    async def heartbeat(self, status: str) -> None:
        c = self._counters
        async with self._repo.connection() as conn:
            await self._repo.worker_heartbeat(
                conn,
                worker_id=self._worker_id,
                status=status,
                total_processed=c.processed,
                total_completed=c.completed,
                total_failed=c.failed,
                total_retries=c.retries,
                recovered_orphans=c.recovered_orphans,
            )
