"""Tasks: the worker's hot path (claim, outcomes, leases, hand-back) and the rescuer's
statements (db/queries.sql, tasks)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import DictRow

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository.base import RepositoryBase
from goodfellaz17.domain.retry import Orphan, OrphanRescue


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    id: uuid.UUID
    order_id: uuid.UUID
    seq: int
    quantity: int
    attempt: int
    fencing_token: int
    queue_position: float
    target: str
    backend: str
    node_id: int
    node_identifier: str
    endpoint: str | None
    capacity_per_hour: int


@dataclass(frozen=True, slots=True)
class TaskFailure:
    task_id: uuid.UUID
    fencing_token: int
    error: str
    permanent: bool
    delay_seconds: float


class TaskQueries(RepositoryBase):
    """One method per `task_*` query of the worker and the rescuer."""

    async def task_claim_batch(
        self,
        conn: AsyncConn,
        *,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        from_position: float = float("-inf"),
        node_offset: int = 0,
    ) -> list[ClaimedTask]:
        rows = await self._fetchall_again_if_moved(
            "task_claim_batch",
            {
                "worker_id": worker_id,
                "limit": limit,
                "lease_seconds": lease_seconds,
                "from_position": from_position,
                "node_offset": node_offset,
            },
            conn,
        )
        return [
            ClaimedTask(
                id=r["id"],
                order_id=r["order_id"],
                seq=r["seq"],
                quantity=r["quantity"],
                attempt=r["attempts"],
                fencing_token=r["fencing_token"],
                queue_position=r["queue_position"],
                target=r["target"],
                backend=r["backend"],
                node_id=r["node_id"],
                node_identifier=r["node_identifier"],
                endpoint=r["endpoint"],
                capacity_per_hour=r["capacity_per_hour"],
            )
            for r in rows
        ]

    async def task_next_retry_at(self, conn: AsyncConn) -> tuple[datetime | None, datetime]:
        row = await self._fetchone("task_next_retry_at", None, conn)
        assert row is not None
        return row["next_retry_at"], row["db_now"]

    async def task_record_outcomes(
        self,
        conn: AsyncConn,
        successes: Sequence[tuple[uuid.UUID, int]],
        failures: Sequence[TaskFailure],
        *,
        max_attempts: int,
    ) -> list[DictRow]:
        """Fenced batch of completions and failures in one statement; returns
        id, order_id, new status, attempts, quantity of the tasks that changed."""
        return await self._fetchall_again_if_moved(
            "task_record_outcomes",
            {
                "done_ids": [s[0] for s in successes],
                "done_tokens": [s[1] for s in successes],
                "failed_ids": [f.task_id for f in failures],
                "failed_tokens": [f.fencing_token for f in failures],
                "errors": [f.error for f in failures],
                "permanent": [f.permanent for f in failures],
                "delays": [f.delay_seconds for f in failures],
                "max_attempts": max_attempts,
            },
            conn,
        )

    async def task_release_many(
        self, conn: AsyncConn, claims: Sequence[tuple[uuid.UUID, int]]
    ) -> set[uuid.UUID]:
        rows = await self._fetchall_again_if_moved(
            "task_release_many",
            {"ids": [c[0] for c in claims], "tokens": [c[1] for c in claims]},
            conn,
        )
        return {r["id"] for r in rows}

    async def task_extend_leases(
        self, conn: AsyncConn, claims: Sequence[tuple[uuid.UUID, int]], lease_seconds: float
    ) -> set[uuid.UUID]:
        rows = await self._fetchall_again_if_moved(
            "task_extend_leases",
            {
                "ids": [c[0] for c in claims],
                "tokens": [c[1] for c in claims],
                "lease_seconds": lease_seconds,
            },
            conn,
        )
        return {r["id"] for r in rows}

    async def task_lock_orphans(self, conn: AsyncConn, *, limit: int) -> list[Orphan]:
        """Lock tasks past their lease (SKIP LOCKED); call inside a transaction
        that then applies task_rescue_orphans."""
        rows = await self._fetchall("task_lock_orphans", {"limit": limit}, conn)
        return [Orphan(r["id"], r["fencing_token"], r["attempts"], r["orphanings"]) for r in rows]

    async def task_rescue_orphans(
        self, conn: AsyncConn, rescues: Sequence[OrphanRescue]
    ) -> list[DictRow]:
        return await self._fetchall(
            "task_rescue_orphans",
            {
                "ids": [r.task_id for r in rescues],
                "tokens": [r.fencing_token for r in rescues],
                "dead_letter": [r.dead_letter for r in rescues],
                "delays": [r.delay_seconds for r in rescues],
            },
            conn,
        )
